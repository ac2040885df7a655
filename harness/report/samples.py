"""The explorer's documents: the first `max_samples` of every cell, with prompts and
references once per document and, for multiple choice, the question, options and picks."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from harness.contract.board import Board, BoardTask
from harness.report.documents import CellData

TEXT_CAP = 1500  # characters of a prompt, response or reference the explorer keeps


# Fields of lm-eval's sample logs that the explorer shows in their own columns (or not at
# all); any other field is a method's or task's per-sample fact (PackLLM's weights, a
# judge's verdict, a sandbox outcome).
SAMPLE_FIELDS = frozenset({"doc", "doc_id", "doc_hash", "prompt_hash", "target_hash", "filter",
                           "filtered_resps", "metrics", "prompt", "response", "target", "task",
                           "arguments", "resps"})


def _clip(text: Any, keep_tail: bool = False) -> str:
    text = "" if text is None else text if isinstance(text, str) else json.dumps(text, default=str)
    if len(text) <= TEXT_CAP:
        return text
    return "…" + text[-TEXT_CAP:] if keep_tail else text[:TEXT_CAP] + "…"


def _document_id(sample: dict[str, Any]) -> str:
    return f"{sample.get('task')}/{sample.get('doc_id')}"


def add_samples(board: Board, cells: CellData) -> None:
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
