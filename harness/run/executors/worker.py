"""A long-lived worker: one process that runs job after job, so that torch, transformers,
lm-eval, the plugins and lm-eval's task index are imported and loaded once per worker, not
once per job, and a base model that the next job loads again comes from memory.

The local pool starts it as `python -m harness.run.executors.worker --memo-bytes N` and talks
to it through its standard streams: one line per job on stdin (`{"spec": PATH,
"capture_logs": BOOL}`), one line back per finished job (`{"code": STATUS}`, the exit
status `harness _job SPEC` would have had). The worker moves its own stdout aside for that
channel at start; while a job runs, file descriptors 1 and 2 go to the job's log as they
do for `harness _job`, and each cell's library output still goes to its own log.txt
(harness.run.progress). End of stdin ends the worker. Ray's actors call `run_one` in the same
way, in their own process.

A job never sees what the previous one did to the process: the environment, the working
directory, torch's thread count, default dtype, grad mode and determinism flags, logging's
root level and handlers and the warning filters are put back after each job, the random
generators are seeded from the job's settings before it starts, and the harness commit is
read again. The one thing kept on purpose is the model memo: pristine copies of loaded
weights keyed by the model's content identity (its `model_identity`: zoo recipe,
local weight hashes or hub revision, and dtype) and the load arguments; every job gets its
own deep copy, so training or patching a model in one job cannot reach the next.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import dataclasses
import gc
import json
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from harness.errors import HarnessError, first_line, redact
from harness.host import AUTOLOAD_OFF, EXTRA_PLUGINS, Host, load_host
from harness.models.loading import model_identity
from harness.run import progress

MEMO_BYTES_VARIABLE = "HARNESS_MODEL_MEMO_MB"  # per worker; 0 turns the memo off
MEMORY_SHARE = 4  # by default all of a pool's memos together hold at most 1/4 of the RAM


def default_memo_bytes(workers: int) -> int:
    """Each of `workers` workers' memo budget: HARNESS_MODEL_MEMO_MB when set, else an
    equal share of a quarter of this machine's memory."""
    if os.environ.get(MEMO_BYTES_VARIABLE):
        return int(float(os.environ[MEMO_BYTES_VARIABLE]) * 2**20)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
    return memory // (MEMORY_SHARE * max(1, workers))


# ----------------------------------------------------------------------------- model memo


class ModelMemo:
    """Loaded weights kept between a worker's jobs, least recently used first out, within a
    byte budget. It wraps `harness.models.loading.load_weights`, the one place transformers
    models are loaded: a model is loaded on the CPU exactly as the plain path loads it before it
    moves it, kept as the pristine copy, and each load hands out a deep copy moved to the
    reference's device (so a GPU holds only the copies jobs use)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.entries: collections.OrderedDict[str, tuple[Any, int]] = collections.OrderedDict()
        self.hits = 0

    @property
    def held_bytes(self) -> int:
        return sum(size for _, size in self.entries.values())

    def wrap(self, load: Callable[..., Any]) -> Callable[..., Any]:
        def memoised(auto_class: Any, ref: Any, what: str, **kwargs: Any) -> Any:
            key = self.key(auto_class, ref, kwargs)
            if key is None:
                return load(auto_class, ref, what, **kwargs)
            if key in self.entries:
                self.entries.move_to_end(key)
                self.hits += 1
            else:
                on_cpu = dataclasses.replace(ref, device="cpu", dtype=ref.resolved_dtype)
                pristine = load(auto_class, on_cpu, what, **kwargs)
                if not self.remember(key, pristine):
                    return pristine.to(ref.device).eval()
            model = copy.deepcopy(self.entries[key][0])
            return model.to(ref.device).eval()
        return memoised

    def key(self, auto_class: Any, ref: Any, kwargs: dict[str, Any]) -> str | None:
        """The memo key, or None where the load cannot be keyed by value (an argument that
        is an object, a reference without a readable identity) or the memo is off."""
        if self.budget <= 0 or not all(isinstance(v, (str, int, float, bool, type(None)))
                                       for v in kwargs.values()):
            return None
        try:
            identity = model_identity(ref)
        except HarnessError:
            return None
        identity.pop("device", None)  # kept on the CPU; each copy moves to its own device
        return json.dumps({"class": f"{auto_class.__module__}.{auto_class.__qualname__}",
                           "model": identity, "arguments": kwargs}, sort_keys=True)

    def remember(self, key: str, model: Any) -> bool:
        size = _tensor_bytes(model)
        if size > self.budget:
            return False
        while self.entries and self.held_bytes + size > self.budget:
            self.entries.popitem(last=False)
        self.entries[key] = (model, size)
        return True


def _tensor_bytes(model: Any) -> int:
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:  # tied weights count once
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


_memo: ModelMemo | None = None


def install_model_memo(budget_bytes: int) -> ModelMemo:
    """This process's model memo, installed in front of every weight load once."""
    global _memo
    if _memo is None:
        from harness.models.loading import route_weight_loads

        _memo = ModelMemo(budget_bytes)
        route_weight_loads(_memo.wrap)
    return _memo


# ----------------------------------------------------------------------------- one job


_hosts: dict[tuple[str, ...], Host] = {}
_jobs_run = 0


def _host(switches: list[str]) -> Host:
    """The host of a job's plugin switches (and the variables that choose plugins), loaded
    once per worker."""
    key = (*switches, *(os.environ.get(name, "") for name in (EXTRA_PLUGINS, AUTOLOAD_OFF)))
    if key not in _hosts:
        _hosts[key] = load_host(switches)
    return _hosts[key]


def run_one(spec_path: Path, capture_logs: bool) -> int:
    """Run one job spec in this process with the job's output in its log, its outcomes
    beside the spec as `harness _job` writes them. Returns the exit status `harness _job`
    would have had; the process is as it was before the job."""
    from harness.run.cell import _seed_everything
    from harness.run.executors import run_job_spec, write_outcomes

    global _jobs_run
    _jobs_run += 1
    with open(spec_path.with_suffix(".log"), "ab") as log, \
            progress.redacted_descriptors(log) as text, _job_state():
        print(f"harness worker {os.getpid()}: job {_jobs_run} of this process", file=text,
              flush=True)
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
            _seed_everything(int(spec["settings"].get("seed") or 0))
            outcomes = run_job_spec(spec, capture_logs, _host(spec["switches"]))
        except HarnessError as exc:
            print(redact(f"harness: error: {exc}"), file=text)
            return exc.exit_code
        except (OSError, ValueError) as exc:
            print(redact(f"harness: error: {type(exc).__name__}: {first_line(exc)}"), file=text)
            return 1
        except Exception:  # a bug: its traceback in the job's log, as an uncaught one would be
            print(redact(traceback.format_exc()), file=text)
            return 1
        finally:
            memo = _memo or ModelMemo(0)
            print(f"harness worker {os.getpid()}: model memo {len(memo.entries)} model(s), "
                  f"{memo.held_bytes / 2**20:.0f} MiB, {memo.hits} load(s) served from memory "
                  f"so far", file=text)
    return write_outcomes(spec_path, outcomes)


@contextlib.contextmanager
def _job_state() -> Iterator[None]:
    """Whatever a job changes in the process's global state, put back afterwards."""
    import torch

    from harness.run import identity

    environment, cwd = dict(os.environ), os.getcwd()
    threads, dtype, grad = torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled()
    deterministic = _determinism(torch)
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    identity.git_commit.cache_clear()  # a new job reads the source commit as a new process would
    try:
        with warnings.catch_warnings():
            yield
    finally:
        os.environ.clear()
        os.environ.update(environment)
        os.chdir(cwd)
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        if _determinism(torch) != deterministic:
            # only when the job changed it: setting it imports torch's inductor (seconds)
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        root.setLevel(level)
        root.handlers[:] = handlers
        gc.collect()
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()


def _determinism(torch: Any) -> tuple[bool, bool]:
    """torch's deterministic-algorithms flag and its warn-only mode."""
    return (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled())


# ----------------------------------------------------------------------------- the process


def warm_up(memo_bytes: int) -> None:
    """Ready this process for jobs: the model memo installed, and what every job imports
    (torch, lm-eval's evaluator, the harness's run machinery) imported before the first one.
    The objects those imports made live as long as the process, so they are moved out of the
    garbage collector's reach (`gc.freeze`): the full collection after each job then scans
    what jobs made, not every module's functions and classes (a few tenths of a second per
    job)."""
    import lm_eval.evaluator  # noqa: F401
    import torch  # noqa: F401

    import harness.run.executors  # noqa: F401
    import harness.run.row  # noqa: F401

    install_model_memo(memo_bytes)
    gc.collect()
    gc.freeze()


class JobActor:
    """The worker as a Ray actor: jobs run in the actor's own process, one at a time."""

    def __init__(self, memo_bytes: int) -> None:
        warm_up(memo_bytes)

    def run(self, spec_path: str, capture_logs: bool) -> int:
        return run_one(Path(spec_path), capture_logs)


def serve(requests: IO[str], replies: IO[str], memo_bytes: int) -> None:
    """Run the jobs named on `requests`, one line each, answering each on `replies`,
    until `requests` ends."""
    warm_up(memo_bytes)
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        code = run_one(Path(request["spec"]), bool(request["capture_logs"]))
        replies.write(json.dumps({"code": code}) + "\n")
        replies.flush()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.run.executors.worker")
    parser.add_argument("--memo-bytes", type=int, default=0)
    args = parser.parse_args()
    # stdout is the channel to the pool; what is printed outside a job goes to stderr
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    serve(sys.stdin, replies, args.memo_bytes)
    return 0


if __name__ == "__main__":  # run as the imported module, so that its globals are the ones used
    from harness.run.executors.worker import main as imported_main

    sys.exit(imported_main())
