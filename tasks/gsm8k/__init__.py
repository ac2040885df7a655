"""`gsm8k`: GSM8K through lm-eval's own task (5-shot, greedy, exact match).

lm-eval scores two answer extractions; the headline is `strict-match` (the `#### N` line),
`flexible-extract` (the last number) is reported beside it. Local data: the original
`test.jsonl` / `train.jsonl` (`{"question", "answer"}`) under `<data-dir>/gsm8k/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harness.api import (Capability, LmEvalPlan, Metric, TaskContext, TaskSpec, at_least,
                         dataset_dict, first_existing, hookimpl, option, read_jsonl_rows)

FIXTURES = Path(__file__).parent / "fixtures"
FIELDS = ("question", "answer")


@dataclass(frozen=True)
class Gsm8kOptions:
    num_fewshot: int = option(5, 'solved examples from the train split before each question')
    max_gen_toks: int = option(256, 'token budget per answer')

    def __post_init__(self) -> None:
        at_least(self, num_fewshot=0, max_gen_toks=1)


def load_split_files(test: Path, train: Path, **_: Any) -> Any:
    return dataset_dict({"test": read_jsonl_rows(test, FIELDS),
                         "train": read_jsonl_rows(train, FIELDS)})


def local_files(base: Path) -> tuple[Path, Path]:
    test = first_existing([base / "gsm8k" / "test.jsonl", base / "test.jsonl"], "GSM8K test.jsonl")
    train = first_existing([test.parent / "train.jsonl"], "GSM8K train.jsonl (the few-shot source)")
    return test.resolve(), train.resolve()


def lm_eval_plan(ctx: TaskContext) -> LmEvalPlan:
    options: Gsm8kOptions = ctx.options
    gen_kwargs = {"max_gen_toks": options.max_gen_toks}
    if ctx.data.kind == "hf":
        return LmEvalPlan(tasks=["gsm8k"], num_fewshot=options.num_fewshot, gen_kwargs=gen_kwargs)
    folder = FIXTURES if ctx.data.kind == "embedded" else None
    test, train = ((folder / "test.jsonl", folder / "train.jsonl") if folder
                   else local_files(ctx.data.folder))
    task = {"task": "gsm8k", "custom_dataset": partial(load_split_files, test, train)}
    return LmEvalPlan(tasks=[task], num_fewshot=options.num_fewshot, gen_kwargs=gen_kwargs,
                      data_files=[test, train])


def training_examples(ctx: TaskContext) -> list[dict[str, str]]:
    """The train split in lm-eval's zero-shot format: "Question: ...\nAnswer:" -> " <answer>"."""
    if ctx.data.kind == "hf":
        import datasets

        rows = list(datasets.load_dataset("openai/gsm8k", "main", split="train"))
    else:
        train = (FIXTURES / "train.jsonl" if ctx.data.kind == "embedded"
                 else local_files(ctx.data.folder)[1])
        rows = read_jsonl_rows(train, FIELDS)
    return [{"prompt": f"Question: {row['question']}\nAnswer:", "target": f" {row['answer']}"}
            for row in rows]


@hookimpl
def harness_tasks() -> list[TaskSpec]:
    return [TaskSpec(
        name="gsm8k",
        description="GSM8K grade-school maths, 5-shot, greedy; exact match of the final number.",
        headline=Metric("exact_match,strict-match", "exact match (strict)"),
        metrics=(Metric("exact_match,flexible-extract", "exact match (flexible)"),),
        lm_eval=lm_eval_plan,
        requires=frozenset({Capability.GENERATION}),
        hf_dataset="openai/gsm8k (main)",
        local_format="original JSONL: gsm8k/test.jsonl and gsm8k/train.jsonl",
        embedded_data=FIXTURES,
        options=Gsm8kOptions,
        training_examples=training_examples,
    )]
