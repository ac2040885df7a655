"""What a running cell is doing, for the CLI's live display, and where library output goes.

The runner installs a `Progress` sink per cell; code deep inside a cell (the training
loop, a method's LM, lm-eval's request loops through `lm_eval_progress`) reports phases and
steps to `current()` without knowing who listens. Without a sink every call is a no-op.

`captured_output(path)` sends everything the libraries print while a cell runs (Python
warnings and logging, tqdm bars, and subprocesses such as git writing to file descriptors
1 and 2) into the cell's log file instead of the terminal, through a pipe that redacts
secrets (a judge server's error body may echo the API key) before a byte is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Protocol, TextIO

from harness.errors import redact


class Progress(Protocol):
    def phase(self, name: str, total: int | None = None) -> None:
        """A new phase of the current cell ("load", "fit", "requests", "score", ...)."""

    def advance(self, steps: int = 1, **facts: Any) -> None:
        """`steps` more units of the current phase done; `facts` such as loss=0.41."""


class _Silent:
    def phase(self, name: str, total: int | None = None) -> None:
        pass

    def advance(self, steps: int = 1, **facts: Any) -> None:
        pass


_sinks: list[Progress] = [_Silent()]


def current() -> Progress:
    return _sinks[-1]


@contextlib.contextmanager
def reporting_to(sink: Progress) -> Iterator[Progress]:
    _sinks.append(sink)
    try:
        yield sink
    finally:
        _sinks.remove(sink)


class _ProgressBar:
    """A stand-in for tqdm inside lm-eval's request loops: counts into `current()` and
    draws nothing."""

    def __init__(self, iterable: Any = None, total: int | None = None, desc: str = "",
                 **_: Any) -> None:
        self.iterable = iterable
        self.n = 0
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        current().phase(_phase_name(desc), total)

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, steps: int = 1) -> None:
        self.n += steps
        current().advance(steps)

    def close(self) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> "_ProgressBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def _phase_name(description: str) -> str:
    text = description.lower()
    for kind in ("loglikelihood_rolling", "loglikelihood", "generate_until"):
        if kind in text:
            return f"requests ({kind})"
    return "requests"


@contextlib.contextmanager
def lm_eval_progress() -> Iterator[None]:
    """Route the progress bars of lm-eval's model loops (HFLM, HFMultimodalLM) into
    `current()` for the duration. Only modules already imported are patched: an LM of
    those classes imported its module to exist, and importing them for an LM that is not
    one costs seconds (transformers' model classes) in every worker."""
    patched: list[tuple[Any, Any]] = []
    for name in ("lm_eval.models.huggingface", "lm_eval.models.hf_vlms"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "tqdm"):
            patched.append((module, getattr(module, "tqdm")))
            setattr(module, "tqdm", _ProgressBar)
    try:
        yield
    finally:
        for module, original in patched:
            setattr(module, "tqdm", original)


class RedactingPipe:
    """A pipe whose other end a thread drains into `sink` (a binary file it then owns)
    line by line, with secrets redacted, so that nothing written into the pipe reaches
    the disk in the clear. Lines end at "\\n" or "\\r" (progress bars); a line longer than
    `MAX_LINE` bytes is passed on in pieces."""

    MAX_LINE = 1 << 20
    DRAIN_S = 10.0  # how long closing waits for writers that outlive the pipe's owner

    def __init__(self, sink: BinaryIO) -> None:
        read_fd, self.write_fd = os.pipe()
        self._thread = threading.Thread(target=self._drain, args=(read_fd, sink), daemon=True,
                                        name="harness-redacting-pipe")
        self._thread.start()

    def _drain(self, read_fd: int, sink: BinaryIO) -> None:
        failed = False

        def emit(data: bytes) -> None:
            nonlocal failed
            if data and not failed:
                try:
                    sink.write(_redacted_bytes(data))
                    sink.flush()
                except Exception:  # a full disk: keep draining, or the writers would block
                    failed = True

        with os.fdopen(read_fd, "rb", buffering=0) as source:
            pending = b""
            while chunk := source.read(1 << 16):
                pending += chunk
                end = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
                if not end and len(pending) > self.MAX_LINE:
                    end = len(pending)
                emit(pending[:end])
                pending = pending[end:]
            emit(pending)
        with contextlib.suppress(Exception):
            sink.close()

    def close(self) -> None:
        """Close this process's end and wait for the rest to be written."""
        os.close(self.write_fd)
        self._thread.join(self.DRAIN_S)


def _redacted_bytes(data: bytes) -> bytes:
    return redact(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


@contextlib.contextmanager
def redacted_descriptors(sink: BinaryIO) -> Iterator[TextIO]:
    """File descriptors 1 and 2 into a `RedactingPipe` draining into `sink` while the
    block runs (subprocesses inherit them); yields a text stream into the same pipe."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    pipe = RedactingPipe(sink)
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    text = open(os.dup(pipe.write_fd), "w", encoding="utf-8", errors="backslashreplace",
                buffering=1)
    try:
        for fd in saved:
            os.dup2(pipe.write_fd, fd)
        yield text
    finally:
        for stream in (sys.stdout, sys.stderr, text):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        text.close()
        pipe.close()


@contextlib.contextmanager
def captured_output(path: Path | None) -> Iterator[None]:
    """Redirect file descriptors 1 and 2, `sys.stdout`/`sys.stderr`, warnings and logging
    into `path` (appending), secrets redacted before they are written; None leaves
    everything where it is (`-v`)."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with redacted_descriptors(open(path, "ab")) as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), \
                    warnings.catch_warnings():
                warnings.simplefilter("default")
                warnings.showwarning = _warning_to(log)
                yield
        finally:
            root.removeHandler(handler)


def _warning_to(log: Any) -> Any:
    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        log.write(warnings.formatwarning(message, category, filename, lineno, line))
    return show
