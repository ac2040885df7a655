"""`kv_arithmetic`: CALM's key-value arithmetic experiment (Bansal et al. 2024, Table 1) at
tiny scale, generated offline from a fixed seed (harness.zoo.kv).

Three datasets over one world of 600 keys, each key one token of the kv zoo models'
vocabulary (as the paper's keys are), with small integer values: kv_substitution
("uww+lkr*agx=" -> "2+3*5"), numeric_arithmetic ("2+3*5=" -> "17") and kv_arithmetic
("uww+lkr*agx=" -> "17"). Task `kv_arithmetic` evaluates the last by default and any with
`-O dataset=`; tasks `kv_substitution` and `numeric_arithmetic` are the same task with that
default changed, so a suite's table has a column per dataset (leaderboard columns are keyed
by task name). Greedy generation up to the end of the line, scored by lm-eval's
`exact_match` after stripping whitespace. The keys fall in three disjoint sets: the
training split (`training_examples`) is KV arithmetic over the composition keys (20%), the
validation split (for early stopping, never scored) over the validation keys (10%), and
every evaluated document with keys uses the held-out keys (70%), so the same fit serves all
three datasets. Needs no data files: every data mode (embedded, hf, local) reads the same
generated documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from harness.api import (KV_DATASETS, Capability, KvDataset, LmEvalPlan, Metric, TaskContext,
                         TaskSpec, at_least, dataset_dict, hookimpl, kv_examples, option)


@dataclass(frozen=True)
class KvArithmeticOptions:
    dataset: KvDataset = option(
        "kv_arithmetic", f"which dataset to evaluate: {', '.join(KV_DATASETS)}")
    test_examples: int = option(200, "evaluation expressions (over the held-out keys)")
    train_examples: int = option(
        30_000, "composition-set size: KV arithmetic over the composition keys (20%)")
    validation_examples: int = option(
        200, "validation-set size: KV arithmetic over the validation keys (10%)")
    max_gen_toks: int = option(16, "token (character) budget per answer")

    def __post_init__(self) -> None:
        at_least(self, test_examples=1, train_examples=1, validation_examples=1, max_gen_toks=1)


@dataclass(frozen=True)
class KvSubstitutionOptions(KvArithmeticOptions):
    dataset: KvDataset = option(
        "kv_substitution", f"which dataset to evaluate: {', '.join(KV_DATASETS)}")


@dataclass(frozen=True)
class NumericArithmeticOptions(KvArithmeticOptions):
    dataset: KvDataset = option(
        "numeric_arithmetic", f"which dataset to evaluate: {', '.join(KV_DATASETS)}")


DESCRIPTIONS = {
    "kv_arithmetic": "arithmetic over keys, e.g. 'uww+lkr*agx=' -> '17' (neither zoo model "
                     "alone can)",
    "kv_substitution": "substitute keys by their values, e.g. 'uww+lkr*agx=' -> '2+3*5'",
    "numeric_arithmetic": "arithmetic on small integers, e.g. '2+3*5=' -> '17'",
}
OPTIONS = {"kv_arithmetic": KvArithmeticOptions, "kv_substitution": KvSubstitutionOptions,
           "numeric_arithmetic": NumericArithmeticOptions}


def load_documents(dataset: KvDataset, count: int, **_: Any) -> Any:
    rows = [{"question": e["prompt"], "answer": e["target"].strip()}
            for e in kv_examples(dataset, "test", count)]
    return dataset_dict({"test": rows})


def lm_eval_plan(ctx: TaskContext) -> LmEvalPlan:
    options: KvArithmeticOptions = ctx.options
    config = {
        "task": f"kv_arithmetic_{options.dataset}",
        "custom_dataset": partial(load_documents, options.dataset, options.test_examples),
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{question}}",
        "doc_to_target": "answer",
        "target_delimiter": " ",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": options.max_gen_toks,
                              "do_sample": False},
        "filter_list": [{"name": "strip", "filter": [{"function": "remove_whitespace"},
                                                     {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean",
                         "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    return LmEvalPlan(tasks=[config], num_fewshot=0, uses_stock_tasks=False)


def training_examples(ctx: TaskContext) -> list[dict[str, str]]:
    """The composition set D_C: KV arithmetic over the composition keys only."""
    return kv_examples("kv_arithmetic", "composition", ctx.options.train_examples)


def validation_examples(ctx: TaskContext) -> list[dict[str, str]]:
    """KV arithmetic over the validation keys: what a fit may stop early on."""
    return kv_examples("kv_arithmetic", "validation", ctx.options.validation_examples)


@hookimpl
def harness_tasks() -> list[TaskSpec]:
    return [TaskSpec(
        name=name,
        description=f"CALM's key-value world (tiny, generated offline): {description}; exact "
                    "match on held-out keys.",
        headline=Metric("exact_match,strip", "exact match"),
        lm_eval=lm_eval_plan,
        requires=frozenset({Capability.GENERATION}),
        options=OPTIONS[name],
        training_examples=training_examples,
        validation_examples=validation_examples,
        generated_data=True,
        version="2",
    ) for name, description in DESCRIPTIONS.items()]
