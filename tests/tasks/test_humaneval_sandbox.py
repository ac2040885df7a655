"""Hostile completions against harness.sandbox: each ends as a failed (or honestly passed)
sample, the harness and the host are unharmed, and the run continues.

Limits are tight so that every case is fast and harmless on a CI machine: the fork bomb
meets the process limit, the memory bomb RLIMIT_AS, the huge file RLIMIT_FSIZE. Cases that
bypass the in-process guard (to show that the kernel-enforced layers hold on their own)
run only where the layer they rely on is active here.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from harness.sandbox import Isolation, Limits, _execute, isolation, run_many, run_python
from harness.tasks.humaneval import program

TIGHT = Limits(timeout_s=3.0, cpu_s=2, memory_mb=256, file_size_mb=4, processes=8)
PROBLEM = {"prompt": "def add(a: int, b: int) -> int:\n    \"\"\"Sum of a and b.\"\"\"\n",
           "test": "\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n"
                   "    assert candidate(-1, 1) == 0\n",
           "entry_point": "add"}
RIGHT = "    return a + b\n"
WRONG = "    return a - b\n"


def run(completion: str, guard: bool = True) -> str:
    return run_python(program(PROBLEM, completion), TIGHT, guard=guard).describe()


def _sandbox_dirs() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("harness-sandbox-*")}


@pytest.fixture(autouse=True)
def leaves_no_trace():
    before = _sandbox_dirs()
    yield
    assert _sandbox_dirs() <= before, "a sandbox working directory was left behind"


def test_honest_completions_pass_and_fail_as_they_should():
    assert run(RIGHT) == "passed"
    assert run(WRONG) == "failed: AssertionError"
    assert run("    return a +\n") == "failed: SyntaxError"


def test_infinite_loop_times_out():
    assert run("    while True:\n        pass\n").startswith("timed out")


def test_sleeping_forever_meets_the_wall_clock():
    assert run("    import time\n    time.sleep(60)\n") == "timed out: wall clock > 3 s"


def test_fork_bomb_is_stopped_by_the_guard():
    assert run("    import os\n    while True:\n        os.fork()\n") == "failed: TypeError"


def test_fork_bomb_without_the_guard_meets_the_process_limit():
    if isolation().process_limit is None:
        pytest.skip("no process limit can be enforced here (root without a pids cgroup)")
    outcome = run("    import os\n    while True:\n        os.fork()\n", guard=False)
    assert outcome.startswith("failed") or outcome.startswith("timed out")
    assert run(RIGHT) == "passed"  # nothing of the bomb is left to starve the next program


@pytest.mark.parametrize("guard", [True, False])
def test_memory_bomb_meets_the_address_space_limit(guard):
    assert run("    blocks = []\n    while True:\n        blocks.append(bytearray(10**7))\n",
               guard) == "failed: MemoryError"
    assert run("    return len(bytearray(1 << 34))\n", guard) == "failed: MemoryError"


@pytest.mark.parametrize("guard", [True, False])
def test_huge_file_write_meets_the_file_size_limit(guard):
    outcome = run("    with open('huge.bin', 'wb') as out:\n"
                  "        for _ in range(64):\n            out.write(bytes(1 << 20))\n"
                  "    return a + b\n", guard)
    assert outcome.startswith("failed")


def test_deleting_files_outside_the_sandbox_fails(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    for attempt in (f"    import os\n    os.remove({str(victim)!r})\n    return a + b\n",
                    f"    import shutil\n    shutil.rmtree({str(tmp_path)!r})\n    return a + b\n",
                    f"    import pathlib\n    pathlib.Path({str(victim)!r}).unlink()\n"
                    "    return a + b\n"):
        assert run(attempt) == "failed: TypeError"
    assert victim.read_text() == "keep me"


def test_the_users_home_and_environment_are_out_of_reach(tmp_path, monkeypatch):
    (tmp_path / ".secret").write_text("token")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HARNESS_TEST_SECRET", "token")
    assert run("    import os\n    return len(open(os.path.expanduser('~/.secret')).read()) + 1\n"
               ) == "failed: FileNotFoundError"
    assert run("    import os\n    return a + b + len(os.environ['HARNESS_TEST_SECRET'])\n"
               ) == "failed: KeyError"


def test_opening_a_socket_reaches_nothing():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        outcome = run("    import socket\n"
                      f"    s = socket.create_connection(('127.0.0.1', {port}), 2)\n"
                      "    s.sendall(b'leak')\n    return a + b\n")
        server.setblocking(False)
        try:  # a connection made during the run waits in the backlog
            connection, _ = server.accept()
            connection.close()
            reached = True
        except BlockingIOError:
            reached = False
    if not isolation().network_namespace:
        assert "NOT isolated" in isolation().describe()["network"]
        pytest.skip("this machine allows no network namespace (reported in the results)")
    assert outcome.startswith("failed") and not reached


def test_the_fallback_without_optional_layers_still_limits(tmp_path):
    bare = Isolation(network_namespace=False, pid_namespace=False, private_uid=False)
    for completion, expected in ((RIGHT, "passed"),
                                 ("    while True:\n        pass\n", "timed out"),
                                 ("    return len(bytearray(1 << 34))\n", "failed: MemoryError")):
        result = _execute(program(PROBLEM, completion), TIGHT, bare, slot=0, guard=True)
        assert result.describe().startswith(expected)


def test_killing_the_parent_fails_and_the_harness_lives():
    parent = os.getpid()
    assert run("    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n"
               "    return a + b\n") == "failed: TypeError"
    if not (isolation().pid_namespace or isolation().private_uid):
        pytest.skip("without a PID namespace or private uid only the guard protects the parent")
    outcome = run("    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n"
                  "    os.killpg(0, signal.SIGKILL)\n    return a + b\n", guard=False)
    assert outcome.startswith("failed")
    assert os.getpid() == parent and run(RIGHT) == "passed"


def test_printing_megabytes_is_harmless_and_honestly_passes():
    assert run("    import sys\n    for _ in range(100):\n        sys.stdout.write('x' * 100_000)\n"
               "    return a + b\n") == "passed"


@pytest.mark.parametrize("early_exit", ["import sys\nsys.exit(0)", "import os\nos._exit(0)",
                                        "raise SystemExit(0)", "exit(0)"])
def test_exiting_before_the_asserts_fails(early_exit):
    assert run(f"{WRONG}{early_exit}\n").startswith("failed")


def test_monkey_patching_the_checker_fails():
    # a `check` of its own is replaced by the real one, defined after the completion
    assert run(f"{WRONG}def check(candidate):\n    return True\n") == "failed: AssertionError"
    # forged success lines on every descriptor lack the per-run token
    forged = ("import os\nfor fd in range(3, 64):\n    try:\n"
              "        os.write(fd, b'passed\\n')\n    except OSError:\n        pass\n")
    assert run(f"{WRONG}{forged}os._exit(0)\n") == "failed: exited with status 0 before finishing"
    # replacing the exit functions the checker might rely on changes nothing
    patched = "import os, sys\nos._exit = sys.exit = lambda *a: None\n"
    assert run(f"{WRONG}{patched}") == "failed: AssertionError"


def test_a_forked_child_cannot_report_for_its_parent():
    fork_then_fail = ("import posix\nif posix.fork() == 0:\n    add = lambda a, b: a + b\n"
                      "else:\n    import time\n    time.sleep(0.5)\n")
    assert run(f"{WRONG}{fork_then_fail}", guard=False) == "failed: AssertionError"


def test_the_run_continues_after_hostile_programs():
    hostile = ["    while True:\n        pass\n", "    import os\n    os.fork()\n",
               "    return len(bytearray(1 << 34))\n", "    import sys\n    sys.exit(0)\n"]
    results = run_many([program(PROBLEM, c) for c in [*hostile, RIGHT]], TIGHT, workers=2)
    assert [r.passed for r in results] == [False] * 4 + [True]
