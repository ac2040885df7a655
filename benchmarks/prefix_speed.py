"""Shared-prefix KV caching (harness.lm._prefix_cache) on MMLU 5-shot, side by side in one run:

- `single` through the harness (prefix caching on, then off) against lm-eval's own
  `simple_evaluate` with HFLM on the same model, tasks, documents and batch size;
- `packllm` over three members with prefix caching on and off.

Every figure is a whole process (start-up included), the best of `--repeats` interleaved
rounds: its wall time, and the CPU time it and its children used (user + system), which
moves far less than the wall when other work shares the cores. The data are the real MMLU files (`--data-dir`, default $HARNESS_DATA_DIR: a folder
holding mmlu/data/{dev,test}); the model is a random Llama with the zoo tokenizer built here.
lm-eval reads the same task configs (MMLU's stock YAML with the local files) through the
harness's cached task index, so its figure leaves out the seconds lm-eval spends indexing
its task files on its own.

    python benchmarks/prefix_speed.py --data-dir /work/shared/data
    python benchmarks/prefix_speed.py --docs 10 --hidden 256 --layers 4   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import Callable

from matrix_speed import call, faster_of, harness_command, random_llama

SUBJECTS = ("world_religions", "miscellaneous", "management", "conceptual_physics")
SHOTS = 5


def lm_eval_child(model: str, data_dir: str, docs: int, batch: int, out: str) -> None:
    """lm-eval's `simple_evaluate` with HFLM on the harness's MMLU plan (a child process)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from harness.contract import DataSource, TaskContext
    from harness.host import load_host
    from harness.options import build_options
    from harness.run.lm_eval_adapter import plan_task_manager, resolve_task_specs

    spec = load_host().task("mmlu")
    options = build_options(spec.options, {"subjects": list(SUBJECTS), "num_fewshot": SHOTS},
                            "mmlu")
    plan = spec.lm_eval(TaskContext(options=options, data=DataSource("local", Path(data_dir)),
                                    workdir=Path(out), limit=docs, seed=1234))
    manager = plan_task_manager(plan)
    output = lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, batch_size=batch, device="cpu"),
        tasks=resolve_task_specs(manager, plan.tasks), num_fewshot=plan.num_fewshot,
        limit=docs, task_manager=manager, bootstrap_iters=0, random_seed=1234,
        numpy_random_seed=1234, torch_random_seed=1234, fewshot_random_seed=1234)
    accuracies = {task: round(result["acc,none"], 6) for task, result in output["results"].items()
                  if "acc,none" in result}
    Path(out, "lm_eval.json").write_text(json.dumps(accuracies, sort_keys=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR"),
                        help="folder holding mmlu/data/{dev,test} (default $HARNESS_DATA_DIR)")
    parser.add_argument("--docs", type=int, default=25, help="documents per subject (4 subjects)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--lm-eval-child", nargs=2, metavar=("MODEL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.data_dir:
        sys.exit("prefix_speed: name the MMLU files with --data-dir or $HARNESS_DATA_DIR")
    if args.lm_eval_child:
        lm_eval_child(args.lm_eval_child[0], args.data_dir, args.docs, args.batch_size,
                      args.lm_eval_child[1])
        return
    cpu: dict[str, float] = {}

    def timed(name: str, run: Callable[[], None]) -> Callable[[], None]:
        """`run`, keeping its least CPU time over the rounds in cpu[name]."""
        def measured() -> None:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            run()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            cpu[name] = min(cpu.get(name, float("inf")), used)
        return measured

    work = Path(tempfile.mkdtemp(prefix="prefix-speed-"))
    members = []
    for name in ("a", "b", "c"):  # three copies: a pack's work, whatever its weights
        (work / name).mkdir()
        members.append(str(random_llama(work / name, args.hidden, args.layers)))
    common = ["-t", "mmlu", "-O", f"subjects=[{','.join(SUBJECTS)}]", "-O", f"num_fewshot={SHOTS}",
              "--data-dir", args.data_dir, "--limit", str(args.docs), "--batch-size",
              str(args.batch_size), "--device", "cpu", "--force"]

    def harness(method: str, models: list[str], cached: bool) -> Callable[[], None]:
        out = work / f"{method}-{'cached' if cached else 'uncached'}"

        def run() -> None:
            call(harness_command("run", "-m", method, "--models", ",".join(models), *common,
                                 "--out", str(out), "--prefix-cache", str(cached).lower()))
        return run

    def lm_eval() -> None:
        call([sys.executable, __file__, "--data-dir", args.data_dir, "--docs", str(args.docs),
              "--batch-size", str(args.batch_size), "--lm-eval-child", members[0], str(work)])

    load = os.getloadavg()
    # the first harness process builds the lm-eval task index kept on disk: not timed
    call(harness_command("run", "-m", "single", "--models", members[0], "-t", "mmlu", "--data-dir",
                         args.data_dir, "--limit", "1", "--out", str(work / "warm-up")))
    names = ("single", "single_off", "lm_eval", "pack", "pack_off")
    single, single_off, theirs, pack, pack_off = faster_of(args.repeats, *(
        timed(name, run) for name, run in zip(names, (
            harness("single", members[:1], True), harness("single", members[:1], False), lm_eval,
            harness("packllm", members, True), harness("packllm", members, False)))))
    print("wall:", dict(zip(names, (single, single_off, theirs, pack, pack_off))), "CPU:", cpu,
          flush=True)
    documents = args.docs * len(SUBJECTS)

    def row(label: str, wall: float, base_wall: float, name: str, base: str) -> str:
        return (f"| {label} | {wall:.1f} s | {wall / base_wall:.2f} | {cpu[name]:.1f} s | "
                f"{cpu[name] / cpu[base]:.2f} |")

    lines = [
        f"MMLU {SHOTS}-shot, {len(SUBJECTS)} subjects x {args.docs} documents ({documents}), batch "
        f"{args.batch_size}, random Llama {args.hidden} wide x {args.layers} layers, CPU, "
        f"best of {args.repeats}; load average before: {' '.join(f'{x:.1f}' for x in load)}, "
        f"after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
        "",
        "| run | wall | ratio | CPU | ratio |",
        "|---|---:|---:|---:|---:|",
        row("lm-eval `simple_evaluate`, HFLM", theirs, theirs, "lm_eval", "lm_eval"),
        row("harness `single`, prefix cache off", single_off, theirs, "single_off", "lm_eval"),
        row("harness `single`, prefix cache on", single, theirs, "single", "lm_eval"),
        row("harness `packllm` (3 members), prefix cache off", pack_off, pack_off, "pack_off",
            "pack_off"),
        row("harness `packllm` (3 members), prefix cache on", pack, pack_off, "pack", "pack_off"),
        "",
        f"single (cached) / lm-eval HFLM: {single / theirs:.2f} wall, "
        f"{cpu['single'] / cpu['lm_eval']:.2f} CPU (aim <= 0.5); packllm cached / uncached: "
        f"{pack / pack_off:.2f} wall, {cpu['pack'] / cpu['pack_off']:.2f} CPU (aim <= 0.4)",
        f"lm-eval accuracies: {(work / 'lm_eval.json').read_text()}",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
