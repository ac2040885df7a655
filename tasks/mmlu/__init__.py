"""`mmlu`: MMLU through lm-eval's own task definitions (5-shot from dev, accuracy).

Hugging Face data: lm-eval's `mmlu_<subject>` tasks as they are (`cais/mmlu`). Local data:
the original headerless CSVs (`question,A,B,C,D,answer`) under `<data-dir>/mmlu/data/{dev,test}`
(or `<data-dir>/mmlu/{dev,test}`), fed into the very same lm-eval task configs. The
headline is accuracy over all questions (lm-eval's size-weighted group mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harness.api import (Capability, DataError, LmEvalPlan, Metric, TaskContext, TaskSpec,
                         UsageError, at_least, dataset_dict, did_you_mean, first_existing, hookimpl,
                         option, read_csv_rows)

SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology "
    "college_chemistry college_computer_science college_mathematics college_medicine "
    "college_physics computer_security conceptual_physics econometrics electrical_engineering "
    "elementary_mathematics formal_logic global_facts high_school_biology high_school_chemistry "
    "high_school_computer_science high_school_european_history high_school_geography "
    "high_school_government_and_politics high_school_macroeconomics high_school_mathematics "
    "high_school_microeconomics high_school_physics high_school_psychology high_school_statistics "
    "high_school_us_history high_school_world_history human_aging human_sexuality "
    "international_law jurisprudence logical_fallacies machine_learning management marketing "
    "medical_genetics miscellaneous moral_disputes moral_scenarios nutrition philosophy "
    "prehistory professional_accounting professional_law professional_medicine "
    "professional_psychology public_relations security_studies sociology us_foreign_policy "
    "virology world_religions"
).split()
LETTERS = "ABCD"
FIXTURES = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class MmluOptions:
    num_fewshot: int = option(5, 'examples from the dev split before each question')
    subjects: tuple[str, ...] = option((), 'subjects to evaluate; empty: every subject in the data')

    def __post_init__(self) -> None:
        at_least(self, num_fewshot=0)


def _check_row(row: list[str]) -> str | None:
    return None if row[5].strip() in LETTERS else f"answer must be one of A B C D, got {row[5]!r}"


def load_subject(data_root: Path, subject: str, **_: Any) -> Any:
    """One subject's test and dev splits in `cais/mmlu`'s schema."""
    splits = {}
    for split in ("test", "dev"):
        rows = read_csv_rows(data_root / split / f"{subject}_{split}.csv", 6, _check_row)
        splits[split] = [{"question": r[0], "subject": subject, "choices": r[1:5],
                          "answer": LETTERS.index(r[5].strip())} for r in rows]
    return dataset_dict(splits)


def local_root(base: Path) -> Path:
    return first_existing([base / "mmlu" / "data", base / "mmlu", base / "data", base],
                          "MMLU folder with test/ and dev/").resolve()


def _local_subjects(root: Path) -> list[str]:
    test_dir = root / "test"
    if not test_dir.is_dir():
        raise DataError(f"{root}: no test/ folder of <subject>_test.csv files")
    found = sorted(p.name.removesuffix("_test.csv") for p in test_dir.glob("*_test.csv"))
    unknown = [s for s in found if s not in SUBJECTS]
    if unknown:
        raise DataError(f"{test_dir}: unknown MMLU subject file(s) {', '.join(unknown)}")
    if not found:
        raise DataError(f"{test_dir}: no <subject>_test.csv files")
    return found


def lm_eval_plan(ctx: TaskContext) -> LmEvalPlan:
    options: MmluOptions = ctx.options
    for subject in options.subjects:
        if subject not in SUBJECTS:
            raise UsageError(f"unknown MMLU subject {subject!r}{did_you_mean(subject, SUBJECTS)}")
    if ctx.data.kind == "hf":
        subjects = list(options.subjects) or list(SUBJECTS)
        return LmEvalPlan(tasks=[f"mmlu_{s}" for s in subjects], num_fewshot=options.num_fewshot)
    root = FIXTURES / "data" if ctx.data.kind == "embedded" else local_root(ctx.data.folder)
    available = _local_subjects(root)
    subjects = list(options.subjects) or available
    missing = [s for s in subjects if s not in available]
    if missing:
        raise DataError(f"{root}: no test file for subject(s) {', '.join(missing)}")
    files = [root / split / f"{s}_{split}.csv" for s in subjects for split in ("test", "dev")]
    files += sorted((root / "auxiliary_train").glob("*.csv"))  # what training methods fit on
    tasks: list[str | dict[str, Any]] = [
        {"task": f"mmlu_{s}", "custom_dataset": partial(load_subject, root, s)} for s in subjects]
    return LmEvalPlan(tasks=tasks, num_fewshot=options.num_fewshot, data_files=files)


def _prompt(question: str, choices: list[str]) -> str:
    """lm-eval's MMLU `doc_to_text`."""
    lines = [question.strip()] + [f"{letter}. {text}" for letter, text in zip(LETTERS, choices)]
    return "\n".join(lines) + "\nAnswer:"


def _described(subject: str) -> str:
    """lm-eval's per-subject MMLU `description`."""
    topic = subject.replace("_", " ")
    return f"The following are multiple choice questions (with answers) about {topic}.\n\n"


def training_examples(ctx: TaskContext) -> list[dict[str, str]]:
    """MMLU's auxiliary_train when the local data has it, else the dev split of the chosen
    subjects, as lm-eval formats them ("...\nAnswer:" -> " B")."""
    options: MmluOptions = ctx.options
    if ctx.data.kind == "hf":
        import datasets

        subjects = list(options.subjects) or list(SUBJECTS)
        return [{"prompt": _described(s) + _prompt(row["question"], row["choices"]),
                 "target": " " + LETTERS[row["answer"]]}
                for s in subjects
                for row in datasets.load_dataset("cais/mmlu", s, split="dev")]
    root = FIXTURES / "data" if ctx.data.kind == "embedded" else local_root(ctx.data.folder)
    auxiliary = sorted((root / "auxiliary_train").glob("*.csv"))
    if auxiliary:  # no subject: these questions come from other multiple-choice sets
        return [{"prompt": _prompt(r[0], r[1:5]), "target": " " + r[5].strip()}
                for path in auxiliary for r in read_csv_rows(path, 6, _check_row)]
    subjects = list(options.subjects) or _local_subjects(root)
    return [{"prompt": _described(s) + _prompt(r[0], r[1:5]), "target": " " + r[5].strip()}
            for s in subjects
            for r in read_csv_rows(root / "dev" / f"{s}_dev.csv", 6, _check_row)]


@hookimpl
def harness_tasks() -> list[TaskSpec]:
    return [TaskSpec(
        name="mmlu",
        description="MMLU, 57 subjects, 5-shot from dev, letter log-likelihood accuracy.",
        headline=Metric("acc,none", "accuracy"),
        lm_eval=lm_eval_plan,
        requires=frozenset({Capability.LOGLIKELIHOOD}),
        hf_dataset="cais/mmlu",
        local_format="original headerless CSVs: mmlu/data/{dev,test}/<subject>_{dev,test}.csv",
        embedded_data=FIXTURES,
        options=MmluOptions,
        training_examples=training_examples,
    )]
