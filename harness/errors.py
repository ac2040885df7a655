"""Errors the CLI turns into one line on stderr and an exit status."""

from __future__ import annotations

import difflib
from typing import Iterable


class HarnessError(Exception):
    """A failure the user can act on; printed as one line, exit status 1."""

    exit_code = 1


class UsageError(HarnessError):
    """Bad names, options or configs; exit status 2."""

    exit_code = 2


class DataError(HarnessError):
    """A missing or malformed data file."""


class ModelLoadError(HarnessError):
    """A model reference that transformers cannot load."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries put details below it)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
