"""Leaderboards from result files only: no torch, no GPU, no datasets.

`build_board` reads every cell's result.json (and failure records) under a results root and
arranges them as method rows x task columns. Writers turn a board into Markdown, a static
HTML page, JSON with per-cell provenance and a PNG plot; they are contributed through the
`harness_report_writers` hook (this module is itself a plugin), so a third-party package can
add LaTeX or CSV the same way.

Each scored cell also carries its paired test against its row's reference row
(harness.report.significance; Holm-corrected over the board), and the HTML page embeds up to
`max_samples` documents per cell for its explorer.

Every text output is deterministic (the bootstrap is seeded): regenerating it from the same
results gives the same bytes, which is what `harness leaderboard --check` relies on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness import hookimpl
from harness.errors import DataError, redact
from harness.hookspecs import ReportWriter
from harness.results.records import CellRecord
from harness.report.significance import (BOOTSTRAP, DEFAULT_ALPHA, DEFAULT_RESAMPLES, MCNEMAR,
                                  Comparison, DocumentScores, compare, document_scores, holm,
                                  pair_seed)
from harness.results.store import Problem, Store, atomic_write_text

COST_HEADER = "inference FLOPs/doc"
COST_NOTE = ("Inference FLOPs/doc: 2 × parameters × tokens of every model the method ran, plus its "
             "own extra work (logit fusion), per evaluated document, over the row's scored cells "
             "(— where the records predate cost counting).")
DEFAULT_MAX_SAMPLES = 50
SIGNIFICANCE_SEED = 0  # fixed, so committed leaderboards regenerate to the same bytes
SIGNIFICANT = "†"
TEXT_CAP = 1500  # characters of a prompt, response or reference the explorer keeps
# Fields of lm-eval's sample logs that the explorer shows in their own columns (or not at
# all); any other field is a method's or task's per-sample fact (PackLLM's weights, a
# judge's verdict, a sandbox outcome).
SAMPLE_FIELDS = frozenset({"doc", "doc_id", "doc_hash", "prompt_hash", "target_hash", "filter",
                           "filtered_resps", "metrics", "prompt", "response", "target", "task",
                           "arguments", "resps"})


@dataclass(frozen=True)
class BoardOptions:
    """What a board computes beyond its records: the paired tests against each row's
    reference row (`resamples` bootstrap draws from `seed`, Holm at `alpha`, the tasks'
    `CorpusMetric`s by task name) and the samples per cell the HTML explorer embeds."""

    resamples: int = DEFAULT_RESAMPLES
    max_samples: int = DEFAULT_MAX_SAMPLES
    seed: int = SIGNIFICANCE_SEED
    alpha: float = DEFAULT_ALPHA
    corpus_metrics: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.resamples < 1:
            raise ValueError(f"resamples must be at least 1, got {self.resamples}")
        if self.max_samples < 0:
            raise ValueError(f"max_samples must be at least 0, got {self.max_samples}")


SMOKE_WARNING = ("Smoke numbers from {what}: they show that the pipeline runs and are "
                 "not comparable with published results.")


UNTRUSTED_NOTE = ("untrusted: its result file is damaged and left out (see the warning "
                  "above; `harness verify` lists it)")


@dataclass
class BoardCell:
    status: str  # "ok", "n/a", "failed", "untrusted" (a damaged result file) or "missing"
    value: float | None = None
    stderr: float | None = None
    reason: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)  # e.g. computed by other code
    cost: dict[str, Any] | None = None  # the record's CellCost, when it was counted
    seed_spread: float | None = None  # several seeds: the standard deviation of their values

    @property
    def flops_per_document(self) -> int | None:
        return self.cost.get("inference_flops_per_document") if self.cost else None
    # The paired test against the row's reference row (None: the row is its own reference
    # or the cell has no score); "unavailable" says why a cell could not be tested.
    comparison: dict[str, Any] | None = None
    significant: bool = False
    samples: list[dict[str, Any]] = field(default_factory=list)  # the explorer's, capped

    def text(self, digits: int = 3, with_stderr: bool = True) -> str:
        if self.status == "ok" and self.value is not None:
            if self.seed_spread is not None:
                seeds = len(self.provenance.get("seeds", ()))
                spread = f" ± {self.seed_spread:.{digits}f}" if with_stderr else ""
                return f"{self.value:.{digits}f}{spread} ({seeds} seeds)"
            if self.stderr is None or not with_stderr:
                return f"{self.value:.{digits}f}"
            return f"{self.value:.{digits}f} ± {self.stderr:.{digits}f}"
        return {"n/a": "n/a", "failed": "failed", "untrusted": "untrusted"}.get(self.status, "—")

    def notes(self) -> list[str]:
        """Footnote texts for this cell: why it is n/a, failed or untrusted, and its flags."""
        why = {"n/a": f"n/a: {self.reason}", "failed": f"failed: {self.reason}",
               "untrusted": UNTRUSTED_NOTE}.get(self.status)
        return ([why] if why else []) + self.flags


@dataclass
class BoardTask:
    name: str
    metric_key: str
    metric_label: str
    higher_is_better: bool
    data: str

    @property
    def header(self) -> str:
        arrow = "↑" if self.higher_is_better else "↓"
        return f"{self.name} ({self.metric_label} {arrow})"


@dataclass
class BoardRow:
    key: str
    label: str
    method: str
    models: list[str]
    trainable_params: int | None
    total_params: int | None
    cells: dict[str, BoardCell]
    mean_win_rate: float | None = None

    @property
    def flops_per_document(self) -> int | None:
        """Inference FLOPs per document over the row's scored cells that counted them."""
        counted = [c.cost for c in self.cells.values() if c.status == "ok" and c.cost
                   and c.cost.get("documents")]
        if not counted:
            return None
        return sum(c["inference"]["flops"] for c in counted) // sum(c["documents"] for c in counted)


@dataclass
class Board:
    tasks: list[BoardTask]
    rows: list[BoardRow]
    problems: list[Problem] = field(default_factory=list)  # result files not trusted
    options: BoardOptions = field(default_factory=BoardOptions)
    results_root: Path | None = None
    # task -> document -> {"prompt", "reference"}: shared by the explorer's cells
    documents: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def comparisons(self) -> int:
        """How many paired tests the board shows (the Holm family)."""
        return sum(1 for row in self.rows for cell in row.cells.values()
                   if cell.comparison and "p_value" in cell.comparison)

    def reasons(self) -> list[str]:
        """Distinct footnote texts, in first-seen order (footnote numbering)."""
        seen: list[str] = []
        for row in self.rows:
            for task in self.tasks:
                for note in row.cells[task.name].notes():
                    if note not in seen:
                        seen.append(note)
        return seen

    def markers(self, cell: BoardCell) -> list[int]:
        notes = self.reasons()
        return [notes.index(note) + 1 for note in cell.notes()]

    def smoke_warning(self) -> str:
        """Non-empty when any column rests on embedded samples or a --limit."""
        def which(names: list[str]) -> str:
            return "every task" if len(names) == len(self.tasks) else ", ".join(names)

        embedded = [t.name for t in self.tasks if "embedded" in t.data]
        limited = [t.name for t in self.tasks if "(limit " in t.data]
        parts = ([f"the embedded sample data ({which(embedded)})"] if embedded else []) + (
            [f"a --limit on the documents ({which(limited)})"] if limited else [])
        return SMOKE_WARNING.format(what=" and ".join(parts)) if parts else ""

    def untrusted_warning(self) -> str:
        """Non-empty when result files under the root cannot be trusted: each by path,
        with the commands that list and resolve them."""
        if not self.problems:
            return ""
        root = self.results_root or Path(".")
        listed = "; ".join(
            problem.reason if problem.reason.startswith(str(problem.path)) else str(problem)
            for problem in self.problems)
        return (f"{len(self.problems)} untrusted result file(s), left out of this board: "
                f"{listed}. `harness verify --out {root}` lists them; the next run that "
                f"includes their cells recomputes them, `harness verify --out {root} --repair` "
                f"moves them into {root / 'quarantine'}.")


def _latest_per_cell(records: list[CellRecord]) -> dict[tuple[str, str], list[CellRecord]]:
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


def _newest(records: list[CellRecord]) -> CellRecord:
    return max(records, key=lambda r: (r.finished_at, r.fingerprint))


def build_board(results_root: Path, options: BoardOptions | None = None) -> Board:
    """The newest record (result or failure) of every row x task, arranged as a board,
    with each cell's paired test against its row's reference row and its samples."""
    options = options or BoardOptions()
    store = Store(results_root)
    problems: list[Problem] = []
    chosen = _latest_per_cell([*store.results(problems), *store.failures(problems)])
    tasks: dict[str, BoardTask] = {}
    rows: dict[str, BoardRow] = {}
    newest_label: dict[str, tuple[str, str]] = {}
    for (key, task_name), seed_records in sorted(chosen.items()):
        record = _newest(seed_records)
        column = tasks.setdefault(task_name, BoardTask(
            task_name, record.task.headline_key, record.task.headline_label,
            record.task.higher_is_better, ""))
        sources = set(filter(None, column.data.removeprefix("mixed: ").split("; ")))
        sources.add(record.data_description)
        # rows run on different data or limits are not comparable: say so in the table
        column.data = ("mixed: " if len(sources) > 1 else "") + "; ".join(sorted(sources))
        row = rows.setdefault(key, BoardRow(
            key=key, label=record.row.label, method=record.row.method,
            models=record.row.model_ids, trainable_params=None, total_params=None, cells={}))
        if record.finished_at >= newest_label.get(key, ("", ""))[0]:
            newest_label[key] = (record.finished_at, record.row.label)
        report = record.method_report if record.status == "ok" else {}
        if row.trainable_params is None and report.get("trainable_params") is not None:
            row.trainable_params = report["trainable_params"]
            row.total_params = report.get("total_params")
        row.cells[task_name] = cell = _board_cell(seed_records)
        if cell.status == "ok" and record.cost is not None:
            cell.cost = dataclasses.asdict(record.cost)
    for key, row in rows.items():
        row.label = newest_label[key][1]
    _mark_untrusted(rows, tasks, problems, store)
    _disambiguate_labels(list(rows.values()))
    _flag_mixed_code(list(rows.values()), chosen)

    ordered_tasks = [tasks[name] for name in sorted(tasks)]
    for row in rows.values():
        for task in ordered_tasks:
            row.cells.setdefault(task.name, BoardCell("missing", reason="not run"))
    board = Board(ordered_tasks, list(rows.values()), problems, options, results_root=results_root)
    _add_mean_win_rates(board)
    board.rows.sort(key=lambda r: (-(r.mean_win_rate if r.mean_win_rate is not None else -1),
                                   r.label, r.key))
    cells = _CellData(store, chosen, options)
    _add_comparisons(board, cells)
    _add_samples(board, cells)
    return board


class _CellData:
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


@dataclass(frozen=True)
class RowComparison:
    """Two rows' paired test on one task, or why there is none (`unavailable`)."""

    task: BoardTask
    result: Comparison | None
    unavailable: str = ""


def compare_rows(results_root: Path, a: str, b: str, tasks: Sequence[str] = (),
                 options: BoardOptions | None = None
                 ) -> tuple[BoardRow, BoardRow, list[RowComparison]]:
    """Row `a` against row `b` (labels or row keys) on every task (or `tasks`) of the
    results, Holm-corrected over the tasks tested. Unknown names raise UsageError."""
    from harness.errors import UsageError

    options = options or BoardOptions(max_samples=0)
    store = Store(results_root)
    chosen = _latest_per_cell([*store.results(), *store.failures()])
    board = build_board(results_root, dataclasses.replace(options, max_samples=0))
    rows = [find_row(board, name, results_root) for name in (a, b)]
    unknown = sorted(set(tasks) - {t.name for t in board.tasks})
    if unknown:
        raise UsageError(f"no task {', '.join(unknown)} in {results_root}; tasks: "
                         f"{', '.join(t.name for t in board.tasks)}")
    cells = _CellData(store, chosen, options)
    found_comparisons: list[RowComparison] = []
    for task in board.tasks:
        if tasks and task.name not in tasks:
            continue
        statuses = [r.cells[task.name].status for r in rows]
        if statuses != ["ok", "ok"]:
            found_comparisons.append(RowComparison(task, None, "not scored in both rows ("
                                                   + " / ".join(statuses) + ")"))
            continue
        result = _paired(cells, task, rows[0], rows[1], options)
        found_comparisons.append(RowComparison(task, None, result) if isinstance(result, str)
                                 else RowComparison(task, result))
    tested = [c for c in found_comparisons if c.result is not None]
    corrected = holm([c.result.p_value for c in tested if c.result is not None])
    by_task = {c.task.name: p for c, p in zip(tested, corrected)}
    return rows[0], rows[1], [
        dataclasses.replace(c, result=dataclasses.replace(c.result, p_holm=by_task[c.task.name]))
        if c.result is not None else c for c in found_comparisons]


def find_row(board: Board, name: str, results_root: Path) -> BoardRow:
    """The row `name` means: its label or key, else the one row of that method, else the
    one row whose label starts with `name`; anything else is a usage error naming the
    candidates."""
    from harness.errors import UsageError

    for matches in ([r for r in board.rows if name in (r.label, r.key)],
                    [r for r in board.rows if r.method == name],
                    [r for r in board.rows if r.label.startswith(name)]):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(f"{name!r} matches {len(matches)} rows in {results_root}: "
                             + "; ".join(repr(r.label) for r in matches[:6])
                             + ("; ..." if len(matches) > 6 else "") + " (quote a longer label)")
    raise UsageError(f"no row {name!r} in {results_root}; rows: "
                     f"{', '.join(repr(r.label) for r in board.rows) or 'none'}")


def _paired(cells: "_CellData", task: BoardTask, row: BoardRow, other: BoardRow,
            options: BoardOptions) -> Comparison | str:
    """The paired test of `row` against `other` on `task`, or why there is none."""
    mine, theirs = cells.scores(row.key, task.name), cells.scores(other.key, task.name)
    for scores in (mine, theirs):
        if isinstance(scores, str):
            return scores
    assert isinstance(mine, DocumentScores) and isinstance(theirs, DocumentScores)
    try:
        return compare(task.name, task.metric_key, mine, theirs, task.higher_is_better,
                       options.resamples, pair_seed(options.seed, task.name, row.key, other.key))
    except DataError as exc:
        return str(exc)


def reference_row(board: Board, row: BoardRow, task: BoardTask) -> BoardRow | None:
    """The row `row` is tested against on `task`: the best `single` row among its own
    models, else the board's first row with a score there."""
    scored = [r for r in board.rows if r.cells[task.name].status == "ok"]
    members = [r for r in scored if r.method == "single" and set(r.models) <= set(row.models)]
    if members:
        sign = 1 if task.higher_is_better else -1
        return max(members, key=lambda r: sign * (r.cells[task.name].value or 0.0))
    return scored[0] if scored else None


def _add_comparisons(board: Board, cells: _CellData) -> None:
    """Every scored cell against its row's reference row on the same task, Holm-corrected
    over all the comparisons of the board."""
    tested = []
    for task in board.tasks:
        for row in board.rows:
            cell = row.cells[task.name]
            reference = reference_row(board, row, task) if cell.status == "ok" else None
            if reference is None or reference is row:
                continue
            base = {"reference": reference.label, "reference_key": reference.key}
            result = _paired(cells, task, row, reference, board.options)
            if isinstance(result, str):
                cell.comparison = base | {"unavailable": result}
                continue
            cell.comparison = base
            tested.append((cell, result))
            if result.docs_differ:
                cell.flags.append(
                    f"tested against {reference.label} on the {result.n} documents both "
                    f"evaluated ({result.only_a} only here, {result.only_b} only there)")
    for (cell, result), p_holm in zip(tested, holm([r.p_value for _, r in tested])):
        result = dataclasses.replace(result, p_holm=p_holm)
        cell.significant = result.significant(board.options.alpha)
        assert cell.comparison is not None
        cell.comparison.update(result.to_dict(), significant=cell.significant,
                               alpha=board.options.alpha)


def _clip(text: Any, keep_tail: bool = False) -> str:
    text = "" if text is None else text if isinstance(text, str) else json.dumps(text, default=str)
    if len(text) <= TEXT_CAP:
        return text
    return "…" + text[-TEXT_CAP:] if keep_tail else text[:TEXT_CAP] + "…"


def _document_id(sample: dict[str, Any]) -> str:
    return f"{sample.get('task')}/{sample.get('doc_id')}"


def _add_samples(board: Board, cells: _CellData) -> None:
    """The first `max_samples` documents of every cell (in document order, so every row
    shows the same documents): response, per-document metric and the per-sample facts;
    prompts and references once per document. A multiple-choice document also carries
    its question, options and correct option(s), and each row's entry the option it
    picked, its log-likelihoods and whether it was right."""
    from harness.data import first_response

    cap = board.options.max_samples
    for task in board.tasks:
        documents = board.documents.setdefault(task.name, {})
        for row in board.rows:
            samples = cells.samples(row.key, task.name)
            if not samples or cap == 0:
                continue
            scores = cells.scores(row.key, task.name)
            per_doc = {} if isinstance(scores, str) else {
                f"{task_}/{doc}": value for (task_, doc, _), value in scores.per_document.items()}
            headline = [s for s in samples if s.get("filter", "none") == _filter_of(task)]
            by_doc = {_document_id(s): s for s in headline or samples}
            chosen = sorted(by_doc.items(), key=lambda item: (
                str(item[1].get("task")), _doc_number(item[1].get("doc_id"))))[:cap]
            for doc, sample in chosen:
                choice = _multiple_choice(sample, task)
                shared = documents.setdefault(doc, {"prompt": _clip(sample.get("prompt"), True),
                                                    "reference": _clip(sample.get("target"))})
                entry: dict[str, Any] = {"doc": doc, "metric": _rounded(per_doc.get(doc))}
                if choice is None:
                    entry["response"] = _clip(first_response(sample))
                else:
                    shared.update(choice.document)
                    entry.update(choice.entry)
                correct = _correct(entry, shared)
                if correct is not None:
                    entry["correct"] = correct
                prompt = _clip(sample.get("prompt"), True)
                if prompt != shared["prompt"]:
                    entry["prompt"] = prompt
                facts = {k: v for k, v in sample.items()
                         if k not in SAMPLE_FIELDS and k not in sample.get("metrics", ())}
                facts.update({f"metric {k}": sample[k] for k in sample.get("metrics", ())
                              if isinstance(sample.get(k), (int, float))})
                if facts:
                    entry["facts"] = {k: v if len(json.dumps(v, default=str)) <= TEXT_CAP
                                      else _clip(v) for k, v in sorted(facts.items())}
                row.cells[task.name].samples.append(entry)


@dataclass(frozen=True)
class _Choice:
    """A multiple-choice sample as the explorer shows it: `document` (question, option
    texts, correct option indices) is shared by every row, `entry` (the option picked and
    the log-likelihood of each) is the row's own."""

    document: dict[str, Any]
    entry: dict[str, Any]


# Where a document names its options, in the fields lm-eval's multiple-choice datasets use
# (MMLU `choices`, ARC `choices.text`, HellaSwag `endings`).
OPTION_FIELDS = ("choices", "options", "endings")


def _multiple_choice(sample: dict[str, Any], task: BoardTask) -> _Choice | None:
    """The sample as a multiple choice (lm-eval logs one log-likelihood per option), or
    None for anything else (generation, a single log-likelihood)."""
    scores = _loglikelihoods(sample.get("filtered_resps") or sample.get("response"))
    if scores is None:
        return None
    logged = sample.get("doc")
    doc: dict[str, Any] = logged if isinstance(logged, dict) else {}
    options = _option_texts(doc, len(scores))
    # lm-eval's acc_norm divides each log-likelihood by its option's length in characters
    normalised = task.metric_key.startswith("acc_norm") and options is not None
    ranked = [score / max(len(text), 1) for score, text in zip(scores, options or ())
              ] if normalised else scores
    document: dict[str, Any] = {"options": [_clip(t) for t in options or
                                            (f"option {i + 1}" for i in range(len(scores)))]}
    gold = _gold(sample.get("target"), options, len(scores))
    if gold is not None:
        document["gold"] = gold
    if isinstance(doc.get("question"), str):
        document["question"] = _clip(doc["question"])
    return _Choice(document, {"choice": ranked.index(max(ranked)),
                              "loglikelihoods": [_rounded(s) for s in scores]})


def _loglikelihoods(responses: Any) -> list[float] | None:
    """One number per option from lm-eval's `[[loglikelihood, is_greedy], ...]` (or the
    raw responses' one more level of nesting); None unless there are at least two."""
    if not isinstance(responses, list) or len(responses) < 2:
        return None
    scores = []
    for response in responses:
        while isinstance(response, list) and len(response) == 1:
            response = response[0]
        if not (isinstance(response, list) and len(response) == 2
                and isinstance(response[0], (int, float)) and isinstance(response[1], bool)):
            return None
        scores.append(float(response[0]))
    return scores


def _option_texts(doc: dict[str, Any], count: int) -> list[str] | None:
    for name in OPTION_FIELDS:
        options = doc.get(name)
        if isinstance(options, dict):
            options = options.get("text")
        if isinstance(options, list) and len(options) == count:
            return [str(option) for option in options]
    return None


def _gold(target: Any, options: list[str] | None, count: int) -> list[int] | None:
    """The correct option indices lm-eval logged as the target: an index, a list of
    indices, an option's text or its letter."""
    targets = target if isinstance(target, list) else [target]
    gold = []
    for value in targets:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        elif isinstance(value, str) and options and value in options:
            value = options.index(value)
        elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().isupper():
            value = ord(value.strip()) - ord("A")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < count:
            return None
        gold.append(value)
    return gold or None


def _correct(entry: dict[str, Any], document: dict[str, Any]) -> bool | None:
    """Whether a row got a document right: its option against the correct ones, else a
    0/1 metric; None when neither says (a BLEU score, no metric)."""
    if "choice" in entry and "gold" in document:
        return entry["choice"] in document["gold"]
    return {0.0: False, 1.0: True}.get(entry["metric"]) if entry["metric"] is not None else None


def _filter_of(task: BoardTask) -> str:
    """The lm-eval filter whose samples carry the headline (`exact_match,strict-match`)."""
    return task.metric_key.partition(",")[2] or "none"


def _doc_number(doc_id: Any) -> tuple[int, str]:
    return (doc_id if isinstance(doc_id, int) else -1), str(doc_id)


def _rounded(value: Any) -> float | None:
    return round(float(value), 6) if isinstance(value, (int, float)) and not (
        isinstance(value, float) and math.isnan(value)) else None


def _disambiguate_labels(rows: list[BoardRow]) -> None:
    """Rows from different runs may share a label: suffix their row keys, never merge."""
    by_label: dict[str, list[BoardRow]] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    for same in by_label.values():
        if len(same) > 1:
            for row in same:
                row.label = f"{row.label} #{row.key[:6]}"


def _flag_mixed_code(rows: list[BoardRow],
                     chosen: dict[tuple[str, str], list[CellRecord]]) -> None:
    """Mark cells of a row computed by another version of the method's code than the
    row's other cells (a fix landed between runs): their numbers may not be comparable."""
    latest = {cell: _newest(records) for cell, records in chosen.items()}
    for row in rows:
        hashes = {task: record.code["method"].source_sha256
                  for (key, task), record in latest.items()
                  if key == row.key and "method" in record.code and record.status != "n/a"}
        if len(set(hashes.values())) < 2:
            continue
        newest = max(((latest[row.key, t].finished_at, h) for t, h in hashes.items()))[1]
        for task, digest in hashes.items():
            if digest != newest:
                row.cells[task].flags.append(
                    f"computed by other {row.method} code (source {digest[:8]}) than the "
                    f"row's newest cell (source {newest[:8]})")


def _mark_untrusted(rows: dict[str, BoardRow], tasks: dict[str, BoardTask],
                    problems: list[Problem], store: Store) -> None:
    """Show the cells whose result file cannot be trusted as "untrusted" where nothing
    else is known of them, in the row the last run's plan names (a row only the plan
    knows gets a row of its own)."""
    planned = {str(e.get("fingerprint", ""))[:16]: e for e in _plan_entries(store)}
    for problem in problems:
        name = problem.path.name
        fp16 = name if problem.path.parent.parent.parent.name == "cells" else name[:-5][-16:]
        entry = planned.get(fp16)
        if entry is None or str(entry.get("task")) not in tasks:
            continue
        key = str(entry.get("row_key", ""))
        row = rows.setdefault(key, BoardRow(key=key, label=str(entry.get("label", key)),
                                            method=str(entry.get("method", "?")), models=[],
                                            trainable_params=None, total_params=None, cells={}))
        task = str(entry["task"])
        if task not in row.cells:
            row.cells[task] = BoardCell("untrusted", reason=problem.reason)


def _plan_entries(store: Store) -> list[dict[str, Any]]:
    try:
        return store.read_plan()
    except DataError:
        return []


def _board_cell(records: list[CellRecord]) -> BoardCell:
    """One board cell from the newest record of each of its seeds: with several seeds,
    the mean of their headlines and their standard deviation (the spread a new training
    run would show); a seed that failed makes the cell fail."""
    cells = [_seed_cell(record) for record in records]
    if len(cells) == 1:
        return cells[0]
    for cell, record in zip(cells, records):
        if cell.status != "ok":
            cell.reason = f"seed {record.seed}: {cell.reason}"
            return cell
    values = [cell.value for cell in cells if cell.value is not None]
    merged = _seed_cell(_newest(records))
    merged.value, merged.stderr = statistics.fmean(values), None
    merged.seed_spread = statistics.stdev(values) if len(values) > 1 else 0.0
    merged.provenance["seeds"] = {str(r.seed): c.value for r, c in zip(records, cells)}
    merged.provenance["fingerprints"] = [r.fingerprint for r in records]
    merged.flags = list(dict.fromkeys(flag for cell in cells for flag in cell.flags))
    return merged


def _seed_cell(record: CellRecord) -> BoardCell:
    provenance = {"fingerprint": record.fingerprint, "data": record.task.data,
                  "n_samples": record.n_samples, "limit": record.limit, "seed": record.seed,
                  "git_commit": record.git_commit,
                  "versions": record.identity.get("versions"),
                  "code": {k: {"version": v.version, "distribution": v.distribution,
                               "source_sha256": v.source_sha256} for k, v in record.code.items()}}
    if record.status == "ok":
        if not record.has_score:
            reason = (record.score_details.get("headline_unavailable")
                      or "no score could be computed (NaN)")
            return BoardCell("failed", reason=reason, provenance=provenance)
        assert record.headline is not None
        caveats = [str(c) for c in record.score_details.get("caveats", [])]
        return BoardCell("ok", record.headline.value, record.headline.stderr,
                         provenance=provenance, flags=caveats)
    return BoardCell(record.status, reason=record.reason, provenance=provenance)


def _add_mean_win_rates(board: Board) -> None:
    rates = mean_win_rates(board.rows, board.tasks)
    for row in board.rows:
        row.mean_win_rate = rates[row.key]


def mean_win_rates(rows: Sequence[BoardRow], tasks: Sequence[BoardTask]) -> dict[str, float | None]:
    """HELM's mean win rate: per task, the share of other rows a row beats (ties count half),
    averaged over the tasks where it has a score. Scale-free, so tasks with metrics on
    different scales weigh the same."""
    rates: dict[str, list[float]] = {row.key: [] for row in rows}
    for task in tasks:
        scored = [(row.key, row.cells[task.name].value) for row in rows
                  if row.cells[task.name].status == "ok"]
        if len(scored) < 2:
            continue
        sign = 1 if task.higher_is_better else -1
        for key, value in scored:
            assert value is not None
            wins = sum(1.0 if sign * value > sign * other else 0.5 if value == other else 0.0
                       for other_key, other in scored if other_key != key and other is not None)
            rates[key].append(wins / (len(scored) - 1))
    return {key: sum(values) / len(values) if values else None for key, values in rates.items()}


# ----------------------------------------------------------------------------- writers


def _format_params(count: int | None) -> str:
    return _format_count(count, (("B", 1e9), ("M", 1e6), ("K", 1e3)))


def _format_flops(count: int | None) -> str:
    return _format_count(count, (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)))


def _format_count(count: int | None, units: tuple[tuple[str, float], ...]) -> str:
    if count is None:
        return "—"
    for unit, size in units:
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)


def _win_rate_text(row: BoardRow) -> str:
    return "—" if row.mean_win_rate is None else f"{row.mean_win_rate:.2f}"


def _marked(board: Board, cell: BoardCell, text: str) -> str:
    markers = board.markers(cell)
    return text + (f" {SIGNIFICANT}" if cell.significant else "") + "".join(
        f" [{m}]" for m in markers)


def significance_note(board: Board) -> str:
    """What the significance mark means, for the board's footer ("" when nothing was
    tested)."""
    if not board.comparisons:
        return ""
    return (f"{SIGNIFICANT}: differs from the row's reference row on that task (the best "
            f"`single` row of the row's own models, else the top row) by a paired test over "
            f"the documents both evaluated ({MCNEMAR} for 0/1 metrics, {BOOTSTRAP} of "
            f"{board.options.resamples} resamples otherwise), Holm-corrected p < "
            f"{board.options.alpha:g} over the {board.comparisons} comparisons shown; "
            f"differences, 95% intervals and p-values are in leaderboard.json and the HTML "
            f"cell details.")


def markdown(board: Board) -> str:
    notes = board.reasons()
    header = ["method", *(t.header for t in board.tasks), "mean win rate", "trainable params",
              COST_HEADER]
    lines = ["# Leaderboard", ""]
    for warning in (board.untrusted_warning(), board.smoke_warning()):
        if warning:
            lines += [f"> **{warning}**", ""]
    lines += ["| " + " | ".join(header) + " |",
              "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in board.rows:
        cells = [_marked(board, row.cells[t.name], row.cells[t.name].text()) for t in board.tasks]
        lines.append("| " + " | ".join([row.label, *cells, _win_rate_text(row),
                                        _format_params(row.trainable_params),
                                        _format_flops(row.flops_per_document)]) + " |")
    seeds = any(cell.seed_spread is not None for row in board.rows for cell in row.cells.values())
    lines += ["", "Cells show the headline metric ± its standard error"
              + ("; a cell over several seeds (\"(3 seeds)\") shows their mean ± the standard "
                 "deviation over seeds" if seeds else "")
              + ". Mean win rate: the share of other methods a method beats on a task, averaged "
              "over tasks. " + COST_NOTE, ""]
    note = significance_note(board)
    if note:
        lines += [note, ""]
    lines += ["Data: " + "; ".join(f"{t.name}: {t.data}" for t in board.tasks) + ".", ""]
    lines += [f"[{i}] {note}" + "  " for i, note in enumerate(notes, 1)]
    return "\n".join(lines).rstrip() + "\n"


def board_json(board: Board) -> str:
    payload = {
        "warning": board.smoke_warning() or None,
        "significance": {"resamples": board.options.resamples, "seed": board.options.seed,
                         "alpha": board.options.alpha, "correction": "holm",
                         "comparisons": board.comparisons},
        "tasks": [{"name": t.name, "metric": t.metric_key, "label": t.metric_label,
                   "higher_is_better": t.higher_is_better, "data": t.data} for t in board.tasks],
        "rows": [{"key": r.key, "label": r.label, "method": r.method, "models": r.models,
                  "trainable_params": r.trainable_params, "total_params": r.total_params,
                  "mean_win_rate": r.mean_win_rate,
                  "inference_flops_per_document": r.flops_per_document,
                  "cells": {name: {"status": c.status, "value": c.value, "stderr": c.stderr,
                                   "seed_spread": c.seed_spread,
                                   "reason": c.reason, "flags": c.flags,
                                   "provenance": c.provenance, "cost": c.cost,
                                   "comparison": c.comparison}
                            for name, c in r.cells.items()}}
                 for r in board.rows],
    }
    if board.problems:
        payload["untrusted"] = {"warning": board.untrusted_warning(),
                                "files": [{"path": str(p.path), "reason": p.reason}
                                          for p in board.problems]}
    return json.dumps(payload, indent=2, sort_keys=True) + "\n"


PAGE_TEMPLATE = "leaderboard.html"  # in harness/templates, package data
_SLOT = re.compile(r"@([A-Z]+)@")


def page_template() -> str:
    """The page's HTML, CSS and JavaScript, with an @NAME@ slot for each generated part."""
    return resources.files("harness.report.templates").joinpath(PAGE_TEMPLATE).read_text(encoding="utf-8")


def html_page(board: Board) -> str:
    """One self-contained page (no network, no build step): the sortable table, and per
    cell a panel with its score, paired test, cost, caveats and provenance, and up to
    `max_samples` documents (a multiple choice as its question and options with each
    row's pick), with a filter to the documents where two chosen rows differ."""
    notes = board.reasons()
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["method", *(t.header for t in board.tasks), "mean win rate", "trainable params",
                    COST_HEADER])
    body = []
    for row in board.rows:
        tds = [f"<td>{html.escape(row.label)}</td>"]
        for task in board.tasks:
            cell = row.cells[task.name]
            title = html.escape("; ".join(cell.notes()) or "click for details", quote=True)
            sort = f' data-sort="{cell.value!r}"' if cell.value is not None else ""
            markers = (f"<sup>{SIGNIFICANT}</sup>" if cell.significant else "") + "".join(
                f"<sup>{m}</sup>" for m in board.markers(cell))
            tds.append(f'<td class="cell" tabindex="0"{sort} '
                       f'data-status="{html.escape(cell.status)}" data-row="{html.escape(row.key)}" '
                       f'data-task="{html.escape(task.name)}" title="{title}">'
                       f'{html.escape(cell.text())}{markers}</td>')
        rate = f' data-sort="{row.mean_win_rate!r}"' if row.mean_win_rate is not None else ""
        params = f' data-sort="{row.trainable_params}"' if row.trainable_params is not None else ""
        tds.append(f"<td{rate}>{_win_rate_text(row)}</td>")
        tds.append(f"<td{params}>{_format_params(row.trainable_params)}</td>")
        flops = row.flops_per_document
        sort_flops = f' data-sort="{flops}"' if flops is not None else ""
        tds.append(f"<td{sort_flops}>{_format_flops(flops)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    notes_html = "<br>".join(f"<sup>{i}</sup> {html.escape(n)}" for i, n in enumerate(notes, 1))
    warning_html = "".join(f'<p class="warning"><strong>{html.escape(warning)}</strong></p>\n'
                           for warning in (board.untrusted_warning(), board.smoke_warning())
                           if warning)
    explorer = {"max_samples": board.options.max_samples, "documents": board.documents,
                "cells": {row.key: {task: cell.samples for task, cell in row.cells.items()
                                    if cell.samples} for row in board.rows}}
    parts = {"HEAD": head, "BODY": "\n".join(body), "NOTES": notes_html, "WARNING": warning_html,
             "SIGNIFICANCE": html.escape(significance_note(board)),
             "DATA": _script_json(board_json(board)),
             "EXPLORER": _script_json(json.dumps(explorer, sort_keys=True, ensure_ascii=False,
                                                 default=str))}
    # one pass, so a slot's text (a row label, a prompt) is never searched for slots itself
    return _SLOT.sub(lambda slot: parts.get(slot[1], slot[0]), page_template())


def _script_json(text: str) -> str:
    """JSON safe inside a <script> element (no "</script>" can end it early)."""
    return text.replace("</", "<\\/").replace("<!--", "<\\u0021--")


def plot_png(board: Board, path: Path) -> None:
    """Score vs trainable parameters, one panel per task, one colour per method row (shared
    legend); symlog x so frozen methods sit at 0 beside adapters with thousands of params."""
    widest = max([row.trainable_params or 0 for row in board.rows] + [10])

    def trainable(row: BoardRow, cell: BoardCell) -> float:
        return row.trainable_params or 0

    def axis_style(axis: Any) -> None:
        axis.set_xscale("symlog", linthresh=1)
        axis.set_xlim(-0.5, widest * 5)

    _score_panels(board, path, trainable, "trainable parameters", axis_style, pareto=False)


def plot_cost_png(board: Board, path: Path) -> None:
    """Score vs inference FLOPs per document (log x), one panel per task, the Pareto front
    (no other row is as cheap and at least as good) joined by a step line and ringed."""
    def flops(row: BoardRow, cell: BoardCell) -> float | None:
        value = cell.flops_per_document
        return float(value) if value else None

    def axis_style(axis: Any) -> None:
        from matplotlib.ticker import NullFormatter

        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks collide

    _score_panels(board, path, flops, "inference FLOPs per document", axis_style, pareto=True)


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the points no other point dominates (as cheap or cheaper, at least as
    good, better in one), ordered by cost; of equal points the first is kept."""
    sign = 1 if higher_is_better else -1
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1], i))
    front: list[int] = []
    for index in order:
        if not front or sign * points[index][1] > sign * points[front[-1]][1]:
            front.append(index)
    return front


def _score_panels(board: Board, path: Path, x_of: Any, x_label: str, axis_style: Any,
                  pareto: bool) -> None:
    """One panel per task of each scored cell's headline against `x_of(row, cell)`, one
    colour and number per row, the legend beside the panels (never over them). Rows at
    the same point are drawn side by side and labelled with their numbers; a scored cell
    with no x (no cost recorded) is named under its panel, so every row is accounted for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import offset_copy

    tasks = board.tasks
    columns = max(1, min(3, len(tasks)))
    rows = max(1, math.ceil(len(tasks) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows),
                                squeeze=False)
    palette = plt.get_cmap("tab20")
    colours = {row.key: palette(i % 20) for i, row in enumerate(board.rows)}
    numbers = {row.key: i for i, row in enumerate(board.rows, 1)}
    for index, axis in enumerate(axes.flat):
        if index >= len(tasks):
            axis.set_visible(False)
            continue
        task = tasks[index]
        placed: dict[tuple[float, float], list[tuple[BoardRow, BoardCell]]] = {}
        unplaced = []
        for row in board.rows:
            cell = row.cells[task.name]
            if cell.status != "ok" or cell.value is None:
                continue
            x = x_of(row, cell)
            if x is None:
                unplaced.append(row)
                continue
            placed.setdefault((x, round(cell.value, 9)), []).append((row, cell))
        for (x, y), group in placed.items():
            spread = max(cell.stderr or 0.0 for _, cell in group)
            axis.update_datalim([(x, y - spread), (x, y + spread)])  # shifted artists do not
            for slot, (row, cell) in enumerate(group):  # side by side, 5 px apart
                shift = offset_copy(axis.transData, fig=figure, units="points",
                                    x=5 * (slot - (len(group) - 1) / 2))
                axis.errorbar([x], [cell.value], yerr=[cell.stderr or 0], fmt="o", capsize=3,
                              color=colours[row.key], transform=shift)
            if len(group) > 1:
                axis.annotate(",".join(str(numbers[r.key]) for r, _ in group), (x, y),
                              xytext=(4 + 2.5 * len(group), 3), textcoords="offset points",
                              fontsize=7, color="0.25")
        points = list(placed)
        if pareto and points:
            front = [points[i] for i in pareto_front(points, task.higher_is_better)]
            axis.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.3",
                      linewidth=1, linestyle="--")
            axis.scatter([p[0] for p in front], [p[1] for p in front], s=140,
                         facecolors="none", edgecolors="0.3")
        elif pareto:
            axis.text(0.5, 0.5, "no cost recorded", ha="center", va="center",
                      transform=axis.transAxes, color="0.5")
        axis.autoscale_view()
        if points or not pareto:
            axis_style(axis)
        axis.set_xlabel(x_label + ("\nnot shown, no cost recorded: " + ", ".join(
            str(numbers[r.key]) for r in unplaced) if unplaced else ""))
        axis.set_ylabel(task.metric_label)
        axis.set_title(task.name)
        axis.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[row.key])
               for row in board.rows]
    labels = [f"{numbers[row.key]}  {row.label}" for row in board.rows]
    if pareto:
        handles.append(plt.Line2D([], [], marker="o", markersize=10, markerfacecolor="none",
                                  color="0.3", linestyle="--"))
        labels.append("Pareto front")
    figure.tight_layout()
    legend = figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5),
                           fontsize=7, frameon=False)
    # the canvas grows to hold the legend beside the panels
    figure.savefig(path, dpi=110, metadata={"Software": None, BOARD_DIGEST_KEY: board_digest(board)},
                   bbox_inches="tight", bbox_extra_artists=[legend])
    plt.close(figure)


def _text_writer(name: str, filename: str, render: Any) -> ReportWriter:
    def write(board: Board, out_dir: Path) -> list[Path]:
        target = Path(out_dir) / filename
        atomic_write_text(target, redact(render(board)))
        return [target]

    return ReportWriter(name, write, checked=True)


PNG_FILES = ("leaderboard.png", "leaderboard-cost.png")


# Pixels depend on matplotlib's and FreeType's versions, so `leaderboard --check` does not
# compare a plot's bytes: each PNG carries the digest of the board it was drawn from.
BOARD_DIGEST_KEY = "harness-board-sha256"


def board_digest(board: Board) -> str:
    return hashlib.sha256(board_json(board).encode()).hexdigest()


def drawn_from(path: Path) -> str | None:
    """The board digest a plot was drawn from (None: not a harness plot, or unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get(BOARD_DIGEST_KEY)
    except OSError:
        return None


def _png_writer(board: Board, out_dir: Path) -> list[Path]:
    targets = [Path(out_dir) / name for name in PNG_FILES]
    plot_png(board, targets[0])
    plot_cost_png(board, targets[1])
    return targets


@hookimpl
def harness_report_writers() -> list[ReportWriter]:
    return [_text_writer("markdown", "leaderboard.md", markdown),
            _text_writer("html", "leaderboard.html", html_page),
            _text_writer("json", "leaderboard.json", board_json),
            ReportWriter("png", _png_writer, checked=False, outputs=PNG_FILES)]


def rich_tables(board: Board, width: int = 80) -> list[Any]:
    """The board for a terminal `width` columns wide, as blocks: the rows that ran the same
    tasks form one table (a sparse matrix would be mostly dashes), blocks on real or
    generated data first, smoke blocks last. A block that is too wide with a column per
    task is drawn with a row per task instead, and cut into parts only when neither fits.
    Values keep their standard errors, † marks and footnote markers; the footnotes follow."""
    from rich.text import Text

    tables: list[Any] = []
    for rows, tasks in _blocks(board):
        smoke = any(_is_smoke(task) for task in tasks)
        names = ", ".join(t.name for t in tasks) if len(tasks) <= 3 else f"{len(tasks)} tasks"
        count = f"{len(rows)} row{'s' * (len(rows) > 1)}"
        title = f"{names}: " + ("smoke numbers" if smoke else count)
        tables += _block_tables(board, rows, tasks, title, width)
    warning = board.smoke_warning()
    if warning:
        tables.append(Text(warning, style="yellow"))
    if board.problems:
        tables.append(Text(board.untrusted_warning(), style="bold red"))
    notes = [significance_note(board)] if any(
        cell.significant for row in board.rows for cell in row.cells.values()) else []
    notes += [f"[{i}] {note}" for i, note in enumerate(board.reasons(), 1)]
    if notes:
        tables.append(Text("\n".join(notes), style="dim"))
    return tables


def _is_smoke(task: BoardTask) -> bool:
    return "embedded" in task.data


def _blocks(board: Board) -> list[tuple[list[BoardRow], list[BoardTask]]]:
    """Rows grouped by the tasks they have a cell on; blocks without smoke data first,
    then the larger ones. Rows in a block are ordered by their win rate within it."""
    groups: dict[tuple[str, ...], list[BoardRow]] = {}
    for row in board.rows:
        present = tuple(t.name for t in board.tasks if row.cells[t.name].status != "missing")
        groups.setdefault(present, []).append(row)
    by_name = {t.name: t for t in board.tasks}
    blocks = [(rows, [by_name[name] for name in names]) for names, rows in groups.items() if names]
    for rows, tasks in blocks:
        rates = mean_win_rates(rows, tasks)
        rows.sort(key=lambda r: -_or_below_all(rates[r.key]))
    blocks.sort(key=lambda b: (any(_is_smoke(t) for t in b[1]), -len(b[0]), b[1][0].name))
    return blocks


def _or_below_all(rate: float | None) -> float:
    return -1.0 if rate is None else rate


def _block_tables(board: Board, rows: list[BoardRow], tasks: list[BoardTask], title: str,
                  width: int) -> list[Any]:
    from rich.markup import escape
    from rich.table import Table

    def value(row: BoardRow, task: BoardTask) -> str:
        cell = row.cells[task.name]
        text = escape(_marked(board, cell, cell.text()))
        style = {"n/a": "dim", "failed": "red"}.get(cell.status, "")
        return f"[{style}]{text}[/{style}]" if style else text

    extras: list[tuple[str, Any]] = [("trainable", lambda r: _format_params(r.trainable_params)),
                                     ("FLOPs/doc", lambda r: _format_flops(r.flops_per_document))]
    if len(tasks) > 1 and len(rows) > 1:
        rates = mean_win_rates(rows, tasks)
        extras.insert(0, ("win rate", lambda r: "—" if rates[r.key] is None
                          else f"{rates[r.key]:.2f}"))
    label_width = min(32, max(len(r.label) for r in rows))
    value_width = max(len(_marked(board, r.cells[t.name], r.cells[t.name].text()))
                      for r in rows for t in tasks)
    task_width = max(value_width, max(len(t.name) for t in tasks))
    wide = label_width + 4 + len(tasks) * (task_width + 3) + len(extras) * 12
    if wide > width:
        tall = max(len(t.name) for t in tasks) + 4 + len(rows) * (
            min(max(value_width, 12), 24) + 3)
        if tall <= width or len(rows) <= len(tasks):  # a row per task: methods as columns
            table = Table(title=escape(title), title_justify="left", expand=False)
            table.add_column("task", style="bold")
            for row in rows:
                table.add_column(escape(row.label), justify="right", overflow="fold")
            for task in tasks:
                table.add_row(escape(task.header), *(value(row, task) for row in rows))
            for name, render in extras:
                table.add_row(name, *(render(row) for row in rows), style="dim")
            return [table]
    per_table = max(1, (width - label_width - 4 - len(extras) * 12) // (task_width + 3))
    parts = [tasks[i:i + per_table] for i in range(0, len(tasks), per_table)]
    tables = []
    for number, part in enumerate(parts, 1):
        suffix = f" ({number}/{len(parts)})" if len(parts) > 1 else ""
        table = Table(title=escape(title + suffix), title_justify="left", expand=False)
        table.add_column("method", style="bold", overflow="fold", max_width=label_width)
        for task in part:
            arrow = "↑" if task.higher_is_better else "↓"
            table.add_column(f"{escape(task.name)}\n{escape(task.metric_label)} {arrow}",
                             justify="right", overflow="fold")
        last = number == len(parts)
        for name, _ in extras if last else []:
            table.add_column(name, justify="right")
        for row in rows:
            table.add_row(escape(row.label), *(value(row, task) for task in part),
                          *(render(row) for _, render in (extras if last else [])))
        tables.append(table)
    return tables
