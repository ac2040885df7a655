"""A run killed at any point resumes to the results of an uninterrupted run.

A reference run of one row on two tasks counts every file-system mutation the harness makes
(creating, writing, linking, renaming, removing), and the writes of lm-eval's response
cache. Then, for each file-system point and two response-cache points (one answer cached;
all of a task's answers but the last), a forked copy of the run is
SIGKILLed just before it, a normal run resumes the same folder, and its records (cost
included; only timings and memory peaks, which are measurements, may differ), samples and
leaderboard must equal the reference, with no lock, scratch folder or temporary file left;
`harness verify` must find nothing wrong.
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
import sqlitedict

from harness import cli
from harness.files import read_jsonl
from harness.results.store import Store

from support import HOST_FIXTURES

PLUGINS = HOST_FIXTURES / "plugins"
SUITE = """
methods: [{method: constant, options: {score: -3, answer: "42"}}]
tasks: [{task: mmlu, options: {num_fewshot: 0}}, {task: gsm8k, options: {num_fewshot: 0}}]
data: embedded
limit: 1
"""
MUTATIONS: list[tuple[Any, str]] = [
    (os, "replace"), (os, "rename"), (os, "link"), (os, "unlink"), (os, "mkdir"),
    (os, "fsync"), (shutil, "rmtree"), (pathlib.Path, "write_text"), (pathlib.Path, "touch"),
    (sqlitedict.SqliteDict, "update"),  # answers into lm-eval's response cache
]
# Of the response-cache writes (the 12 MMLU answers one by one, the last with lm-eval's
# rewrite of all of them, then the GSM8K answer): one answer cached, all but the last.
RESPONSE_POINTS = (2, 12)


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
    return cli.main(["-p", "constant_plugin", "run", "--suite", str(suite), "--results", str(out)])


def snapshot(out: Path) -> dict[str, Any]:
    store = Store(out)
    cells = {}
    for record in store.results():
        facts = record.to_dict()
        for measured in ("finished_at", "timings"):
            del facts[measured]
        for measured in ("wall_s", "peak_memory_bytes"):
            del facts["cost"][measured]
        cells[record.fingerprint] = (facts, read_jsonl(store.cell_dir(
            record.row.method, record.task.name, record.fingerprint) / "samples.jsonl"))
    leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                       if p.name.startswith(".") or p.parent.name in ("locks", "work"))
    return {"cells": cells, "leaderboard": (out / "leaderboard.md").read_text(),
            "leftovers": leftovers}


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
    assert len(reference["cells"]) == 2 and len(seen) > 20 and reference["leftovers"] == []
    assert all(facts["cost"]["inference"]["flops"] > 0 for facts, _ in reference["cells"].values())
    responses = [i for i, name in enumerate(seen, 1) if name == "update"]
    points = [i for i, name in enumerate(seen, 1) if name != "update"] + [
        responses[k - 1] for k in RESPONSE_POINTS]

    survived, broken = 0, []
    for point in points:
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
        verified = cli.main(["verify", "--results", str(out)])
        found = snapshot(out)
        if resumed == 0 and verified == 0 and found == reference:
            survived += 1
        else:
            differ = [part for part in reference if found[part] != reference[part]]
            broken.append(f"{point} ({seen[point - 1]}): exits {resumed}, {verified}; "
                          f"differs in {differ}; left {found['leftovers']}")
    print(f"kill points survived: {survived} of {len(points)}", file=sys.stderr)
    assert broken == []
