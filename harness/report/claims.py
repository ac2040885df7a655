"""Papers' claims measured over seeds: pooled paired tests between rows of claims suites.

A claims suite runs every configuration it compares once per seed, in one of two ways:
trained methods through the run's seeds (`seeds: [1, 2, 3]`: one cell per seed), packs of
zoo experts through experts of different training seeds (rows labelled "... (seed N)"). A
claim pools the documents of every seed: each (seed, document) is one pair, compared with
the exact McNemar test of `harness.report.significance` (a bootstrap interval beside it). An
*oracle router* is a row computed per document as the best of some `single` rows: the
ceiling of any method that answers each document with one member.

`python -m harness.report.claims [--results results/claims]` prints the README's claims table from
the committed results (exit 1 when a claim's rows are missing).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from harness.errors import DataError
from harness.report.significance import Comparison, DocKey, DocumentScores, compare, document_scores
from harness.results.records import CellRecord
from harness.results.store import Store

SEED_SUFFIX = re.compile(r" \(seed (\d+)\)$")
ORACLE = "oracle router"


@dataclass(frozen=True)
class Claim:
    """`row` against `against` on `task`, pooled over the seeds of `results`.

    `kind` "beats": the claim holds when `row` is higher with pooled p < `alpha`;
    "within": when the 95% interval of `row` - `against` lies above -`margin`.
    """

    method: str
    statement: str
    paper: str
    results: str  # folder under the claims results root
    task: str
    row: str  # a row label without its " (seed N)" suffix, or ORACLE
    against: str
    kind: Literal["beats", "within"] = "beats"
    margin: float = 0.03
    alpha: float = 0.05
    oracle_of: tuple[str, ...] = ()  # the single rows an ORACLE row chooses from

    def holds(self, comparison: Comparison) -> bool:
        if self.kind == "within":
            return comparison.ci_low > -self.margin
        return comparison.difference > 0 and comparison.p_value < self.alpha


OVERLAP_SINGLES = ("overlap-ascending", "overlap-descending")
ADALINK, VLM_BASE = "adalink text+image", "scene-vlm (base)"
CLAIMS = (
    Claim("PackLLM", "fusion beats top-1 perplexity routing", "+1.89 points (avg. of 25 tasks)",
          "packllm", "mixed_domains", "packllm", "top1_ppl"),
    Claim("PackLLM", "fusion beats the uniform ensemble", "above it on average",
          "packllm", "mixed_domains", "packllm", "ensemble"),
    Claim("PackLLM", "fusion beats any router (oracle per document)", "not claimed",
          "packllm", "mixed_domains", "packllm", ORACLE, oracle_of=OVERLAP_SINGLES),
    Claim("Aligner", "1 token learns the form (beats its base)", "alignment is form",
          "aligner", "answer_form", "aligner 1 token (expert-forms)", "expert-forms (base)"),
    Claim("Aligner", "1 token within 3 points of LoRA on form", "win rate 0.4-0.5 vs LoRA",
          "aligner", "answer_form", "aligner 1 token (expert-forms)",
          "lora-all-linear (expert-forms)", kind="within"),
    Claim("Aligner", "1 token within 3 points of LLaMA-Adapter on form",
          "win rate 0.4-0.5 vs LLaMA-Adapter", "aligner", "answer_form",
          "aligner 1 token (expert-forms)", "llama_adapter (expert-forms)", kind="within"),
    Claim("Aligner", "10 tokens within 3 points of LoRA on form", "10 tokens beat LoRA",
          "aligner", "answer_form", "aligner 10 tokens (expert-forms)",
          "lora-all-linear (expert-forms)", kind="within"),
    Claim("Aligner", "contrast: LoRA beats 1 token on knowledge", "not claimed (form only)",
          "aligner", "mixed_domains", "lora-all-linear (expert-ascending)",
          "aligner 1 token (expert-ascending)"),
    Claim("AdaLink", "text and image links learn VQA (beat the captioning base)",
          "adaptation to captioning and VQA", "adalink", "scene_vqa", ADALINK, VLM_BASE),
    Claim("AdaLink", "within 3 points of LoRA on VQA", "competitive with LoRA (VQA tables)",
          "adalink", "scene_vqa", ADALINK, "lora-all-linear", kind="within"),
    Claim("AdaLink", "with a GELU link: within 3 points of LoRA on VQA",
          "activation not published", "adalink", "scene_vqa", "adalink text+image, gelu",
          "lora-all-linear", kind="within"),
    Claim("AdaLink", "within 3 points of full fine-tuning on VQA",
          "approaches full FT (COCO CIDEr about 140 for both)", "adalink", "scene_vqa", ADALINK,
          "full_ft (all but the vision tower)", kind="within"),
)


def pooled_scores(folder: Path, task: str) -> dict[str, DocumentScores]:
    """Each row label (seed suffix dropped) -> its per-document headline values over every
    seed, keyed by seed and document. Where a row ran several times with one seed, its
    newest cell counts."""
    store = Store(folder)
    newest: dict[tuple[str, str], CellRecord] = {}
    for record in store.find(task=task):  # newest first
        match = SEED_SUFFIX.search(record.row.label)
        seed = f"run {record.seed}" + (f", experts {match.group(1)}" if match else "")
        newest.setdefault((SEED_SUFFIX.sub("", record.row.label), seed), record)
    pooled: dict[str, dict[DocKey, float]] = {}
    for (label, seed), record in sorted(newest.items(), key=lambda item: item[0]):
        scores = document_scores(record, store.samples_of(record))
        if isinstance(scores, str):
            raise DataError(f"{folder}: {label} ({seed}): {scores}")
        for (subtask, doc, digest), value in scores.stats.items():
            pooled.setdefault(label, {})[f"{seed}: {subtask}", doc, digest] = value
    return {label: DocumentScores(stats) for label, stats in pooled.items()}


def oracle(rows: Sequence[DocumentScores]) -> DocumentScores:
    """Per document, the best of `rows` (on the documents all of them have)."""
    shared = set.intersection(*(set(r.stats) for r in rows))
    return DocumentScores({key: max(r.stats[key] for r in rows) for key in shared})


def seeds_of(scores: DocumentScores) -> int:
    """How many seeds the pooled documents come from."""
    return len({subtask.partition(": ")[0] for subtask, _, _ in scores.stats})


def evaluate(claim: Claim, root: Path) -> tuple[Comparison, int]:
    """The pooled comparison of a claim and the number of seeds it pools."""
    rows = pooled_scores(root / claim.results, claim.task)
    if claim.row == ORACLE or claim.against == ORACLE:
        rows[ORACLE] = oracle([_row(rows, name, claim, root) for name in claim.oracle_of])
    a, b = _row(rows, claim.row, claim, root), _row(rows, claim.against, claim, root)
    return compare(claim.task, "accuracy", a, b), min(seeds_of(a), seeds_of(b))


def _row(rows: dict[str, DocumentScores], name: str, claim: Claim, root: Path) -> DocumentScores:
    if name not in rows:
        raise DataError(f"{root / claim.results}: no {claim.task} results of row {name!r} "
                        f"(rows: {', '.join(sorted(rows)) or 'none'})")
    return rows[name]


def table(root: Path, claims: Sequence[Claim] = CLAIMS) -> str:
    """The README's claims table: paper figure, ours (pooled scores and difference with its
    95% interval), seeds, the exact McNemar p and whether the claim holds."""
    lines = ["| method | claim | paper | ours (pooled) | seeds | p | holds |",
             "|---|---|---|---|---|---|---|"]
    for claim in claims:
        result, seeds = evaluate(claim, root)
        ours = (f"{result.score_a:.3f} vs {result.score_b:.3f}: {result.difference:+.3f} "
                f"[{result.ci_low:+.3f}, {result.ci_high:+.3f}], n={result.n}")
        lines.append(f"| {claim.method} | {claim.statement} | {claim.paper} | {ours} | {seeds} "
                     f"| {result.p_value:.2g} | {'yes' if claim.holds(result) else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report.claims", description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("results/claims"),
                        help="the claims results root (default: results/claims)")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(table(args.results))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
