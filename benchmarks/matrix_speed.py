"""The harness against lm-eval's own CLI, the scheduler, and the harness's own overhead
(benchmarks 1, 3 and 4 of the execution issue). Every ratio compares runs made side by side
in this one invocation, each the faster of `--repeats` interleaved tries.

1. `single`: `harness run` versus `lm_eval --model hf` on the same random Llama, documents
   and batch size: one task, then a row of four tasks (one harness command, where lm-eval
   users run one command per task, and also lm-eval with the four tasks in one command).
   Both read the same complete YAML task configs written here.
3. Scheduler: 16 jobs of fixed work (`--sleep` seconds in the build of the test method
   `constant`, a wait that leaves the cores to the executors) on 4 slots, with the local
   pool and with Ray: wall / (total work / 4), for this tree's long-lived workers and for
   `--baseline`'s one process per job side by side.
4. Overhead: the share of a tiny cell's wall time that is not lm-eval's evaluation
   (planning, fingerprints, records, leaderboard), in process; and the start-up of a
   process evaluating a stock lm-eval task with an empty and with a warm task-index cache.

    python benchmarks/matrix_speed.py                  # everything (about 15 min on 2 cores)
    python benchmarks/matrix_speed.py --only 1 --docs 200
    python benchmarks/matrix_speed.py --only 1 --row-baseline dec01c0   # the row, before/after
    python benchmarks/matrix_speed.py --only 3            # about 25 min on 2 loaded cores
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable

REPO = Path(__file__).resolve().parents[1]
CONSTANT_PLUGIN = REPO / "tests" / "host" / "fixtures" / "plugins"
TASKS = ("bench_a", "bench_b", "bench_c", "bench_d")
BASELINE = "b7757fe"  # the last commit whose local pool and Ray ran one process per job

TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\nAnswer:"
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""

TASK_PLUGIN = '''"""Four complete lm-eval YAML tasks as harness task plugins (benchmark only)."""
from pathlib import Path

from harness.api import LmEvalPlan, Metric, TaskSpec, hookimpl

FOLDER = Path({folder!r})


def _plan(name):
    def plan(ctx):
        return LmEvalPlan(tasks=[name], include_path=[FOLDER], uses_stock_tasks=False,
                          data_files=[FOLDER / f"{{name}}.jsonl"])
    return plan


@hookimpl
def harness_tasks():
    return [TaskSpec(name=name, description="benchmark task", headline=Metric("acc,none", "acc"),
                     lm_eval=_plan(name)) for name in {tasks!r}]
'''


def faster_of(repeats: int, *runs: Callable[[], None]) -> list[float]:
    """Each run's best wall time over `repeats` rounds, the runs interleaved in each round."""
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def call(command: list[str], env: dict[str, str] | None = None, cwd: Path = REPO) -> None:
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} ... failed:\n{result.stderr[-3000:]}")


def harness_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


def random_llama(folder: Path, hidden: int, layers: int) -> Path:
    """A random Llama with the zoo tokenizer, saved where both tools load it from."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from harness.contract import ModelRef
    from harness.models.loading import model_location

    tokenizer = AutoTokenizer.from_pretrained(model_location(ModelRef("harness-zoo/tiny-llama")))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden,
                         intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    path = folder / "llama"
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_tasks(folder: Path, docs: int) -> None:
    words = "river stone cloud apple violin copper winter garden signal harbour".split()
    for t, name in enumerate(TASKS):
        with open(folder / f"{name}.jsonl", "w") as out:
            for d in range(docs):
                question = " ".join(words[(d + t + k) % len(words)] for k in range(12 + d % 9))
                choices = [" ".join(words[(d * c + k) % len(words)] for k in range(3))
                           for c in range(1, 5)]
                out.write(json.dumps({"question": question, "choices": choices,
                                      "answer": d % 4}) + "\n")
        (folder / f"{name}.yaml").write_text(TASK_YAML.format(name=name,
                                                              data=folder / f"{name}.jsonl"))
    (folder / "bench_tasks.py").write_text(TASK_PLUGIN.format(folder=str(folder), tasks=TASKS))


def against_lm_eval(work: Path, args: argparse.Namespace) -> list[str]:
    model = random_llama(work, args.hidden, args.layers)
    tasks = work / "tasks"
    tasks.mkdir()
    write_tasks(tasks, args.docs)
    env = {"PYTHONPATH": str(tasks), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    batch = str(args.batch)

    def harness(names: tuple[str, ...], source: Path = REPO) -> Callable[[], None]:
        def run() -> None:
            out = work / "harness_out"
            shutil.rmtree(out, ignore_errors=True)
            call(harness_command("-p", "bench_tasks", "run", "--method", "single",
                                 "--models", str(model), "--task", ",".join(names),
                                 "--batch-size", batch, "--device", "cpu", "--out", str(out)),
                 {**env, "PYTHONPATH": os.pathsep.join(
                     [str(tasks)] + [str(source)] * (source != REPO))}, cwd=source)
        return run

    def lm_eval(names: tuple[str, ...]) -> Callable[[], None]:
        def run() -> None:
            call([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                  f"pretrained={model},dtype=float32", "--tasks", ",".join(names),
                  "--include_path", str(tasks), "--batch_size", batch, "--device", "cpu",
                  "--output_path", str(work / "lm_eval_out")], env)
        return run

    def lm_eval_each(names: tuple[str, ...]) -> Callable[[], None]:
        def run() -> None:
            for name in names:
                lm_eval((name,))()
        return run

    shape = f"hidden {args.hidden}, {args.layers} layers, {args.docs} documents x 4 choices"
    lines = [f"## 1. `single` against lm-eval's CLI ({shape} per task, batch {args.batch})", "",
             "| run | harness | lm-eval | harness / lm-eval |", "|---|---:|---:|---:|"]
    if args.row_baseline:  # the row as commit `--row-baseline` ran it: one evaluation per task
        before = source_at(args.row_baseline, work / "row_baseline")
        row_before, row_ours, row_joint = faster_of(args.repeats, harness(TASKS, before),
                                                    harness(TASKS), lm_eval(TASKS))
        return lines + [
            f"| four tasks: one harness row ({args.row_baseline}: one lm-eval evaluation per "
            f"task) vs one lm-eval command for all four | {row_before:.1f} s | "
            f"{row_joint:.1f} s | {row_before / row_joint:.2f} |",
            f"| four tasks: one harness row (this tree: one evaluation) vs one lm-eval command "
            f"for all four | {row_ours:.1f} s | {row_joint:.1f} s | {row_ours / row_joint:.2f} |",
            ""]
    one_ours, one_theirs = faster_of(args.repeats, harness(TASKS[:1]), lm_eval(TASKS[:1]))
    row_ours, row_each, row_joint = faster_of(args.repeats, harness(TASKS), lm_eval_each(TASKS),
                                              lm_eval(TASKS))
    return lines + [
        f"| one task | {one_ours:.1f} s | {one_theirs:.1f} s | {one_ours / one_theirs:.2f} |",
        f"| four tasks: one harness row, one lm-eval command per task | {row_ours:.1f} s | "
        f"{row_each:.1f} s | {row_ours / row_each:.2f} |",
        f"| four tasks: one harness row, one lm-eval command for all four | {row_ours:.1f} s | "
        f"{row_joint:.1f} s | {row_ours / row_joint:.2f} |",
        "",
    ]


def source_at(ref: str, folder: Path) -> Path:
    """The harness of git commit `ref` laid out as it installs (plugins/ as harness.methods,
    tasks/ as harness.tasks) in `folder`, with that commit's test plugins: run with `folder`
    first on PYTHONPATH, a command and its workers import that harness; the installed
    libraries stay the same."""
    folder.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "harness", "plugins",
                              "tasks", str(CONSTANT_PLUGIN.relative_to(REPO))],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "plugins").rename(folder / "harness" / "methods")
    (folder / "tasks").rename(folder / "harness" / "tasks")
    # a harness that found its built-in plugins through entry points (later ones list them
    # in harness.host): a distribution record beside it declares those of its pyproject.toml
    pyproject = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:pyproject.toml"],
                               capture_output=True, text=True, check=True).stdout
    if "[project.entry-points.harness]" not in pyproject:
        return folder
    section = pyproject.split("[project.entry-points.harness]", 1)[1].split("\n[", 1)[0]
    record = folder / "harness-0.dist-info"
    record.mkdir()
    (record / "METADATA").write_text("Metadata-Version: 2.1\nName: harness\nVersion: 0\n")
    (record / "entry_points.txt").write_text("[harness]" + section.replace('"', ""))
    return folder


def constant_suite(path: Path, sleeps: list[float]) -> Path:
    """A suite of one `constant` row per entry of `sleeps` (its build's wait) on one MMLU
    document."""
    rows = "\n".join(f"  - {{method: constant, options: {{score: -{j + 1}, sleep_s: {sleep}}}}}"
                     for j, sleep in enumerate(sleeps))
    path.write_text(f"methods:\n{rows}\ntasks:\n  - {{task: mmlu, options: {{num_fewshot: 0}}}}\n"
                    "data: embedded\nlimit: 1\n")
    return path


def scheduler(work: Path, args: argparse.Namespace) -> list[str]:
    suite = constant_suite(work / "scheduler.yaml", [args.sleep] * 16)
    before = source_at(args.baseline, work / "baseline")

    def executor(source: Path, *flags: str, chosen: Path = suite) -> Callable[[], None]:
        own_plugins = source / CONSTANT_PLUGIN.relative_to(REPO)  # the test method of its time

        def run() -> None:
            out = work / "scheduler_out"
            shutil.rmtree(out, ignore_errors=True)
            # `python -m` puts the working directory first on sys.path: the source's own
            call(harness_command("-p", "constant_plugin", "run", "--suite", str(chosen),
                                 "--out", str(out), *flags),
                 {"PYTHONPATH": os.pathsep.join([str(own_plugins), str(source)])}, cwd=source)
        return run

    # each source's lm-eval task index (keyed by its own task folders) is built before any
    # timed run, so that the first timed run of a source does not pay what the others find
    # on disk
    warm = constant_suite(work / "warm.yaml", [0.0])
    for source in (before, REPO):
        executor(source, "--no-leaderboard", chosen=warm)()
    ideal = 16 * args.sleep / 4
    pool, ray = ("--jobs", "4"), ("--executor", "ray", "--jobs", "4")
    pool_before, pool_after, ray_before, ray_after = faster_of(
        1, executor(before, *pool), executor(REPO, *pool), executor(before, *ray),
        executor(REPO, *ray))
    return [
        f"## 3. Scheduler: 16 jobs of {args.sleep:.0f} s fixed work on 4 slots "
        f"(ideal {ideal:.0f} s)",
        "",
        f"| executor | `--baseline` {args.baseline} | this tree "
        "| before / ideal | after / ideal |",
        "|---|---:|---:|---:|---:|",
        f"| local pool (`--jobs 4`) | {pool_before:.1f} s | {pool_after:.1f} s | "
        f"{pool_before / ideal:.2f} | {pool_after / ideal:.2f} |",
        f"| Ray (`--executor ray --jobs 4`) | {ray_before:.1f} s | {ray_after:.1f} s | "
        f"{ray_before / ideal:.2f} | {ray_after / ideal:.2f} |",
        "",
    ]


def overhead(work: Path, args: argparse.Namespace) -> list[str]:
    """In process: time inside lm-eval's `simple_evaluate` against the whole command."""
    sys.path.insert(0, str(CONSTANT_PLUGIN))
    import lm_eval

    from harness import cli

    inside = [0.0]
    evaluate = lm_eval.simple_evaluate

    def timed_evaluate(*a: object, **k: object) -> object:
        start = time.perf_counter()
        try:
            return evaluate(*a, **k)
        finally:
            inside[0] += time.perf_counter() - start

    rows = ["--method=constant", "-t", "mmlu", "--data", "embedded", "--limit", "2"]
    cells = 8
    out = work / "overhead_out"
    # a first cell pays the imports and loads the task index: steady state is what repeats
    assert cli.main(["-p", "constant_plugin", "run", *rows, "-o", "score=0", "--out", str(out),
                     "--no-leaderboard"]) == 0
    lm_eval.simple_evaluate = timed_evaluate
    start = time.perf_counter()
    for j in range(cells):
        code = cli.main(["-p", "constant_plugin", "run", *rows, "-o", f"score=-{j + 1}",
                         "--out", str(out), "--no-leaderboard"])
        assert code == 0, code
    matrix = time.perf_counter() - start
    start = time.perf_counter()
    assert cli.main(["leaderboard", "--results", str(out)]) == 0
    board = time.perf_counter() - start
    lm_eval.simple_evaluate = evaluate

    def stock_start(cache: Path) -> Callable[[], None]:
        def run() -> None:
            call(harness_command("-p", "constant_plugin", "run", *rows, "--force",
                                 "--out", str(work / "start_out")),
                 {"PYTHONPATH": str(CONSTANT_PLUGIN), "HARNESS_CACHE": str(cache)})
        return run

    def cold() -> None:
        shutil.rmtree(work / "cold_cache", ignore_errors=True)
        stock_start(work / "cold_cache")()

    stock_start(work / "warm_cache")()  # fills the warm cache's index
    cold_s, warm_s = faster_of(args.repeats, cold, stock_start(work / "warm_cache"))
    harness_share = (matrix - inside[0]) / matrix
    return [
        f"## 4. Overhead of the harness ({cells} tiny cells in process after a first one: "
        "the `constant` test method, MMLU sample, 2 documents)",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| wall time of the {cells} cells | {matrix:.2f} s |",
        f"| of which inside lm-eval's `simple_evaluate` | {inside[0]:.2f} s |",
        f"| harness share (planning, fingerprints, records, locks) | {harness_share:.1%} |",
        f"| harness time per cell | {(matrix - inside[0]) / cells:.3f} s |",
        f"| leaderboard of the {cells} cells (all writers) | {board:.2f} s |",
        f"| process start-up to a finished stock-task cell, empty index cache | {cold_s:.1f} s |",
        f"| the same with the task index cached | {warm_s:.1f} s |",
        f"| start-up saved by the index cache | {cold_s - warm_s:.1f} s |",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["1", "3", "4"], action="append")
    parser.add_argument("--docs", type=int, default=100, help="documents per task (1)")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=30.0, help="fixed work per job (3)")
    parser.add_argument("--row-baseline", metavar="COMMIT",
                        help="(1) only the four-task row: this tree, COMMIT's harness and one "
                             "lm-eval command side by side")
    parser.add_argument("--baseline", default=BASELINE,
                        help="git commit whose executors run one process per job (3)")
    args = parser.parse_args()
    chosen = args.only or ["1", "3", "4"]
    benchmarks = {"1": against_lm_eval, "3": scheduler, "4": overhead}
    print(f"Machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for key in chosen:
            work = Path(tmp) / key
            work.mkdir()
            print("\n".join(benchmarks[key](work, args)), flush=True)


if __name__ == "__main__":
    main()
