"""Where the harness meets lm-eval: its task index and task objects, `simple_evaluate` run on
a method's LM with a metered response cache, and its per-sample log made compact and
JSON-safe."""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Any, Iterator

from harness.contract import Cell, HarnessLM, LmEvalPlan
from harness.errors import HarnessError
from harness.run import progress
from harness.run.response_cache import metered_response_cache


class _WithoutCustomDatasetAdvice(logging.Filter):
    """lm-eval warns, for every task whose documents come from a callable (`custom_dataset`),
    that such callables take keyword arguments from `--metadata`. The harness hands it every
    local and generated data set that way and never uses `--metadata`, so the advice is noise
    repeated in every cell's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


_LM_EVAL_TASK_LOG = logging.getLogger("lm_eval.api.task")


_LM_EVAL_TASK_LOG.addFilter(_WithoutCustomDatasetAdvice())


RESPONSES = "responses"  # lm-eval's response cache in a cell's workdir (a file name prefix)


def answers_saved(workdir: Path) -> bool:
    """Whether an earlier try saved answers in lm-eval's response cache in `workdir`."""
    return any(workdir.glob(f"{RESPONSES}*"))


def run_lm_eval(cell: Cell, lm: Any, workdir: Path) -> dict[str, Any]:
    """Step 2: lm-eval's evaluation of the task's plan on the LM, logging every sample."""
    plan = cell.lm_eval_plan
    assert plan is not None
    return evaluate_tasks(cell, lm, resolve_task_specs(plan_task_manager(plan), plan.tasks),
                          workdir)


def evaluate_tasks(cell: Cell, lm: Any, tasks: list[Any], workdir: Path,
                   plan_applied: bool = False) -> dict[str, Any]:
    """`simple_evaluate` of `tasks` (specs, or lm-eval Task and Group objects, harness.run.row)
    with `cell`'s plan and settings, its response cache in `workdir`. `plan_applied`: the
    task objects carry their own few-shot counts and generation settings already."""
    import lm_eval

    settings, plan = cell.settings, cell.lm_eval_plan
    assert plan is not None
    manager = plan_task_manager(plan)
    with progress.lm_eval_progress(), _without_environment_probe(), metered_response_cache():
        output: dict[str, Any] = lm_eval.simple_evaluate(
            model=lm, tasks=tasks, num_fewshot=None if plan_applied else plan.num_fewshot,
            limit=settings.limit,
            # lm-eval keys its response cache by request only (lm-eval #2715): a folder per
            # cell fingerprint keeps methods apart and lets a killed cell resume its requests,
            # their cost included (harness.run.response_cache)
            use_cache=str(workdir / RESPONSES),
            log_samples=True, bootstrap_iters=0, task_manager=manager,
            gen_kwargs=None if plan_applied else plan.gen_kwargs,
            confirm_run_unsafe_code=plan.confirm_run_unsafe_code,
            apply_chat_template=plan.apply_chat_template,
            random_seed=settings.seed, numpy_random_seed=settings.seed,
            torch_random_seed=settings.seed, fewshot_random_seed=settings.seed)
    if not output or "samples" not in output:
        raise HarnessError(f"lm-eval returned no results for task {cell.task!r}")
    return output


def output_for(output: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """The part of `simple_evaluate`'s output about the tasks and groups `names`: what an
    evaluation of those alone returns (every per-task table keeps only their entries)."""
    return {key: ({name: entry for name, entry in value.items() if name in names}
                  if isinstance(value, dict) and key in _PER_TASK else value)
            for key, value in output.items()}


# simple_evaluate's tables keyed by task or group name
_PER_TASK = {"results", "groups", "group_subtasks", "configs", "versions", "n-shot",
             "higher_is_better", "n-samples", "samples"}


@contextlib.contextmanager
def _without_environment_probe() -> Iterator[None]:
    """lm-eval describes the environment after every evaluation through torch's
    `collect_env`, which shells out to pip (over a second per cell); the harness records
    versions in each cell's provenance, and nothing reads lm-eval's copy."""
    import lm_eval.evaluator

    probe = lm_eval.evaluator.add_env_info
    lm_eval.evaluator.add_env_info = lambda storage: None
    try:
        yield
    finally:
        lm_eval.evaluator.add_env_info = probe


def collect_samples(output: dict[str, Any], lm: Any) -> list[dict[str, Any]]:
    """Step 3: lm-eval's sample logs, compacted, each annotated with what the method
    recorded for that sample's own requests (e.g. PackLLM's weights)."""
    samples = []
    for task_name in sorted(output["samples"]):
        for raw in output["samples"][task_name]:
            sample = _compact_sample(task_name, raw)
            if isinstance(lm, HarnessLM):
                sample.update(lm.sample_annotations(raw))
            samples.append(sample)
    return samples


@functools.lru_cache(maxsize=8)
def task_manager(include_path: tuple[str, ...], include_defaults: bool = True) -> Any:
    """lm-eval's task manager. Its index of lm-eval's ~14,700 task files takes seconds to
    build, so it is kept on disk (harness.run.lm_eval_index) and built once per lm-eval
    version and set of task folders, not once per process."""
    from harness.run.lm_eval_index import cached_task_manager

    return cached_task_manager(list(include_path), include_defaults)


def plan_task_manager(plan: LmEvalPlan) -> Any:
    """lm-eval's task manager for the plan's task folders (and lm-eval's own tasks where it
    uses them)."""
    return task_manager(tuple(str(p) for p in plan.include_path), plan.uses_stock_tasks)


def resolve_task_specs(manager: Any, specs: list[str | dict[str, Any]]) -> list[Any]:
    """Expand `{"task": registered_name, **overrides}` onto the registered YAML config.

    lm-eval treats a dict spec as a complete inline config; our task plugins mean "the
    stock task, with these fields replaced" (typically `custom_dataset` for local files).
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    resolved: list[str | dict[str, Any]] = []
    for spec in specs:
        entry = manager.task_index.get(spec.get("task")) if isinstance(spec, dict) else None
        if isinstance(spec, dict) and entry is not None and entry.yaml_path:
            spec = {**load_yaml(entry.yaml_path, resolve_func=True), **spec}
        resolved.append(spec)
    return resolved


def _compact_sample(task_name: str, record: dict[str, Any]) -> dict[str, Any]:
    compact = {k: v for k, v in record.items() if k not in {"doc", "arguments", "resps"}}
    compact["doc"] = json_safe(record.get("doc"))
    compact["task"] = task_name
    compact["prompt"] = _first_argument(record.get("arguments"))
    compact["response"] = record.get("resps")
    return compact


def _first_argument(arguments: Any) -> Any:
    if isinstance(arguments, dict):  # lm-eval >= 0.4.5 logs {"gen_args_0": {"arg_0": ...}}
        generation: Any = next(iter(arguments.values()), {})
        return generation.get("arg_0") if isinstance(generation, dict) else generation
    if isinstance(arguments, (list, tuple)) and arguments:
        first = arguments[0]
        return first[0] if isinstance(first, (list, tuple)) else first
    return arguments


def json_safe(value: Any) -> Any:
    """The value with anything JSON cannot hold (images, tensors, bytes) replaced by a tag."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return f"<{type(value).__name__}>"
