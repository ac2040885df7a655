"""What killed runs, damaged files and a full disk leave behind is cleared or named: a dead
process's lock and a finished cell's scratch folder (`harness status` and the next run),
temporary files of dead processes, unreadable failure records (`harness verify --repair`
and the next run), and a full disk (one line naming the path and the space left; nothing
partial; the rerun resumes)."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.contract import Plan
from harness.host import load_host
from harness.results.records import CellRecord, RowInfo, Score, TaskInfo, row_key
from harness.results.store import Store
from harness.run.jobs import run_plan

from support import HOST_FIXTURES

PLUGINS = HOST_FIXTURES / "plugins"


def _done_cell(store: Store, fingerprint: str = "a" * 64) -> CellRecord:
    models = [{"id": "harness-zoo/tiny-llama", "revision": "main", "dtype": "auto"}]
    record = CellRecord(status="ok", fingerprint=fingerprint,
                        row=RowInfo(row_key("single", models, {}), "single", "single (tiny-llama)",
                                    {}, models),
                        task=TaskInfo("mmlu", {}, "acc,none", "accuracy"), identity={},
                        finished_at="2026-01-01T00:00:00", headline=Score(0.5))
    store.commit_cell(record, [{"doc_id": 0}])
    return record


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_status_clears_the_lock_and_scratch_of_a_cell_killed_after_its_commit(tmp_path: Path
                                                                              ) -> None:
    store = Store(tmp_path)
    record = _done_cell(store)
    # what a kill between the commit and the cleanup leaves
    lock = store.lock_path(record.fingerprint)
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "started": 0}))
    store.log_path(record.fingerprint).write_text("partial")
    host = socket.gethostname()
    leftovers = [tmp_path / "locks" / f".draft.{host}-{_dead_pid()}.abcd1234",
                 tmp_path / f".plan.json.{host}-{_dead_pid()}.efgh5678",
                 tmp_path / "locks" / f"{'a' * 16}.lock.stale.{host}-{_dead_pid()}.aside"]
    mine = tmp_path / f".plan.json.{host}-{os.getpid()}.ijkl9012"  # a live process's: kept
    unrelated = tmp_path / ".notes-2.txt"  # not the harness's: kept
    for path in (*leftovers, mine, unrelated):
        path.write_text("")

    from harness.results.status import matrix_status

    [status] = matrix_status(load_host([]), tmp_path)
    assert status.state == "done"
    assert not lock.exists() and not (tmp_path / "work" / record.fingerprint[:16]).exists()
    assert not any(path.exists() for path in leftovers) and mine.exists() and unrelated.exists()


def test_a_live_lock_and_its_scratch_are_kept(tmp_path: Path) -> None:
    store = Store(tmp_path)
    record = _done_cell(store)
    with store.claim(record.fingerprint) as holder:  # e.g. a --force rerun of a done cell
        assert holder is None
        scratch = store.workdir(record.fingerprint)
        store.tidy()
        assert scratch.is_dir() and store.lock_path(record.fingerprint).exists()


def test_an_orphan_garbage_failure_record_is_resolved(tmp_path: Path, capsys) -> None:
    store = Store(tmp_path)
    _done_cell(store)
    garbage = tmp_path / "failed" / "single--mmlu--0123456789abcdef.json"
    garbage.parent.mkdir()
    garbage.write_text("{garbage")
    garbage.with_suffix(".log.txt").write_text("its log")
    assert cli.main(["verify", "--results", str(tmp_path)]) == 1
    assert "--repair" in capsys.readouterr().err
    assert cli.main(["verify", "--results", str(tmp_path), "--repair"]) == 0
    moved = tmp_path / "quarantine" / "failed" / garbage.name
    assert moved.exists() and moved.with_suffix(".log.txt").exists() and not garbage.exists()
    assert cli.main(["verify", "--results", str(tmp_path)]) == 0

    garbage.write_text("[1, 2]")  # again, then a run (of nothing) resolves it
    run_plan(load_host([]), Plan([], store))
    assert not garbage.exists() and cli.main(["verify", "--results", str(tmp_path)]) == 0


def test_a_record_of_a_newer_harness_is_never_moved(tmp_path: Path) -> None:
    store = Store(tmp_path)
    record = _done_cell(store, "b" * 64)
    newer = tmp_path / "failed" / "single--mmlu--cccccccccccccccc.json"
    newer.parent.mkdir()
    newer.write_text(json.dumps({**record.to_dict(), "schema": 99}))
    assert cli.main(["verify", "--results", str(tmp_path), "--repair"]) == 1
    assert newer.exists()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_a_full_disk_is_named_leaves_nothing_partial_and_the_rerun_resumes(
        tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))
    out = tmp_path / "out"
    args = ["-p", "constant_plugin", "run", "-m", "constant", "-t", "gsm8k", "--data", "embedded",
            "--limit", "1", "-O", "num_fewshot=0", "--results", str(out)]
    fsync = os.fsync

    def full_under_cells(fd: int) -> None:  # the disk fills while a cell is committed
        if str(out / "cells") in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_under_cells)
    assert cli.main(args) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(out / "cells" / "constant" / "gsm8k") in lines[0]
    assert re.search(r"no space left on the device \(\d+\.\d [MG]iB free in /", lines[0])
    assert list((out / "cells").rglob("*.*")) == []  # no partial cell, no staging left

    monkeypatch.setattr(os, "fsync", fsync)
    assert cli.main(args) == 0
    assert "1 computed" in capsys.readouterr().out
    assert cli.main(["verify", "--results", str(out)]) == 0
