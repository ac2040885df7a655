"""An example third-party harness plugin: one method and one task.

Method `instructed`: a single frozen model whose every prompt is preceded by a fixed
instruction (the simplest prompt-engineering baseline). Task `addition`: two-digit
addition answered by generation, defined as an lm-eval YAML config shipped in this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.api import (BuildContext, Capability, LmEvalPlan, MethodSpec, Metric, TaskContext,
                         TaskSpec, count_parameters, hf_lm, hookimpl, load_causal_lm, option)

HERE = Path(__file__).parent


@dataclass(frozen=True)
class InstructedOptions:
    instruction: str = option("Answer the question.", "text put before every prompt")


def build_instructed(ctx: BuildContext) -> Any:
    # lm-eval (and torch with it) is imported here, so `harness list` stays fast.
    from harness_example_plugin.instructed import InstructedLM

    model, tokenizer = load_causal_lm(ctx.models[0])
    ctx.report.trainable_params, ctx.report.total_params = 0, count_parameters(model)[1]
    return InstructedLM(hf_lm(model, tokenizer, ctx), ctx.options.instruction)


def addition_plan(ctx: TaskContext) -> LmEvalPlan:
    test = HERE / "data" / "addition.jsonl"
    task = {"task": "example_addition",
            "dataset_kwargs": {"data_files": {"test": str(test)}}}
    return LmEvalPlan(tasks=[task], include_path=[HERE], data_files=[test])


@hookimpl
def harness_methods() -> list[MethodSpec]:
    return [MethodSpec(name="instructed",
                       description="One frozen model with a fixed instruction before every prompt.",
                       build=build_instructed, options=InstructedOptions, version="1")]


@hookimpl
def harness_tasks() -> list[TaskSpec]:
    return [TaskSpec(name="addition", description="Two-digit addition, exact match of the sum.",
                     headline=Metric("exact_match,none", "exact match"), lm_eval=addition_plan,
                     requires=frozenset({Capability.GENERATION}),
                     local_format="JSONL {question, answer}", embedded_data=HERE / "data",
                     version="1")]
