"""What a board reads from the store beyond the records: each chosen cell's samples and
per-document scores (pooled over seeds), read once when first needed."""

from __future__ import annotations

from typing import Any

from harness.contract.board import BoardOptions
from harness.errors import DataError
from harness.report.significance import DocumentScores, document_scores
from harness.results.records import CellRecord
from harness.results.store import Store


def latest_per_cell(records: list[CellRecord]) -> dict[tuple[str, str], list[CellRecord]]:
    """The newest record of each (row, task, seed), listed per (row, task) in seed order;
    rows are keyed by their identity, never by their label, so two configurations that
    share a label both stay."""
    newest: dict[tuple[str, str, Any], CellRecord] = {}
    for record in sorted(records, key=lambda r: (r.finished_at, r.fingerprint)):
        newest[record.row.key, record.task.name, record.seed] = record
    chosen: dict[tuple[str, str], list[CellRecord]] = {}
    for (key, task, _), record in sorted(newest.items(), key=lambda item: (
            item[0][0], item[0][1], item[0][2] if isinstance(item[0][2], int) else -1)):
        chosen.setdefault((key, task), []).append(record)
    return chosen


def newest_record(records: list[CellRecord]) -> CellRecord:
    return max(records, key=lambda r: (r.finished_at, r.fingerprint))


class CellData:
    """Each chosen cell's samples and per-document scores, read once when first needed."""

    def __init__(self, store: Store, chosen: dict[tuple[str, str], list[CellRecord]],
                 options: BoardOptions) -> None:
        self.store, self.chosen, self.options = store, chosen, options
        self._samples: dict[str, list[dict[str, Any]]] = {}  # by fingerprint
        self._scores: dict[tuple[str, str], DocumentScores | str] = {}

    def _samples_of(self, record: CellRecord | None) -> list[dict[str, Any]]:
        if record is None:
            return []
        if record.fingerprint not in self._samples:
            try:
                self._samples[record.fingerprint] = self.store.samples_of(record)
            except DataError:
                self._samples[record.fingerprint] = []
        return self._samples[record.fingerprint]

    def samples(self, key: str, task: str) -> list[dict[str, Any]]:
        """The samples of the cell's first seed (what the explorer shows)."""
        return self._samples_of(next(iter(self.chosen.get((key, task), [])), None))

    def scores(self, key: str, task: str) -> DocumentScores | str:
        """Per-document statistics, pooled over the cell's seeds: a document of each seed
        is a document of its own, so rows pair up by (seed, document)."""
        if (key, task) not in self._scores:
            per_seed: list[tuple[Any, DocumentScores]] = []
            found: DocumentScores | str = "no stored samples"
            for record in self.chosen.get((key, task), []):
                samples = self._samples_of(record)
                scores = (document_scores(record, samples,
                                          self.options.corpus_metrics.get(task, ()))
                          if samples else "no stored samples")
                if isinstance(scores, str):
                    found, per_seed = scores, []
                    break
                per_seed.append((record.seed, scores))
            if len(per_seed) == 1:
                found = per_seed[0][1]
            elif per_seed:
                first = per_seed[0][1]
                found = DocumentScores({(f"{doc_task}#seed{seed}", doc, digest): stat
                                        for seed, scores in per_seed
                                        for (doc_task, doc, digest), stat in scores.stats.items()},
                                       first.value, first.summed)
            self._scores[key, task] = found
        return self._scores[key, task]
