"""A run killed at any point resumes to the results of an uninterrupted run.

A reference run of one row on two tasks counts every file-system mutation the harness makes
(creating, writing, linking, renaming, removing). Then, for each of those points, a forked
copy of the run is SIGKILLed just before that mutation, a normal run resumes the same
folder, and its cells, samples and leaderboard must equal the reference; `harness verify`
must find nothing wrong.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from harness import cli
from harness.store import Store, read_jsonl

PLUGINS = Path(__file__).parent / "fixtures" / "plugins"
SUITE = """
methods: [{method: constant, options: {score: -3, answer: "42"}}]
tasks: [{task: mmlu, options: {num_fewshot: 0}}, {task: gsm8k, options: {num_fewshot: 0}}]
data: embedded
limit: 1
"""
MUTATIONS: list[tuple[Any, str]] = [
    (os, "replace"), (os, "rename"), (os, "link"), (os, "unlink"), (os, "mkdir"),
    (os, "fsync"), (shutil, "rmtree"), (pathlib.Path, "write_text"), (pathlib.Path, "touch"),
]


@contextlib.contextmanager
def counted_mutations(on_mutation: Callable[[str], None]) -> Iterator[None]:
    originals = [(owner, name, getattr(owner, name)) for owner, name in MUTATIONS]

    def wrap(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def mutation(*args: Any, **kwargs: Any) -> Any:
            on_mutation(name)
            return function(*args, **kwargs)
        return mutation

    for owner, name, function in originals:
        setattr(owner, name, wrap(name, function))
    try:
        yield
    finally:
        for owner, name, function in originals:
            setattr(owner, name, function)


def run_matrix(out: Path, suite: Path) -> int:
    return cli.main(["-p", "constant_plugin", "run", "--suite", str(suite), "--out", str(out)])


def snapshot(out: Path) -> dict[str, Any]:
    store = Store(out)
    cells = {r.fingerprint: (r.status, r.metrics, read_jsonl(
        store.cell_dir(r.row.method, r.task.name, r.fingerprint) / "samples.jsonl"))
        for r in store.results()}
    return {"cells": cells, "leaderboard": (out / "leaderboard.md").read_text()}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_run_killed_at_any_mutation_resumes_to_the_same_results(tmp_path: Path,
                                                                   monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    assert run_matrix(tmp_path / "warm-up", suite) == 0  # caches filled: every run alike
    seen: list[str] = []
    with counted_mutations(seen.append):
        assert run_matrix(tmp_path / "reference", suite) == 0
    reference = snapshot(tmp_path / "reference")
    assert len(reference["cells"]) == 2 and len(seen) > 20

    survived, broken = 0, []
    for point in range(1, len(seen) + 1):
        out = tmp_path / f"killed-{point}"
        count = [0]

        def kill_at_point(name: str) -> None:
            count[0] += 1
            if count[0] == point:
                os.kill(os.getpid(), signal.SIGKILL)

        child = os.fork()
        if child == 0:  # the run to kill
            with counted_mutations(kill_at_point):
                code = run_matrix(out, suite)
            os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
            f"point {point} ({seen[point - 1]}) was not reached")
        resumed = run_matrix(out, suite)
        verified = cli.main(["verify", "--out", str(out)])
        if resumed == 0 and verified == 0 and snapshot(out) == reference:
            survived += 1
        else:
            broken.append(f"{point} ({seen[point - 1]})")
    print(f"kill points survived: {survived} of {len(seen)}", file=sys.stderr)
    assert broken == []
