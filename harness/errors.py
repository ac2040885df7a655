"""Errors the CLI turns into one line on stderr and an exit status."""

from __future__ import annotations

import difflib
import os
import re
from typing import Any, Iterable


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


class MissingTool(HarnessError):
    """A system tool a cell needs is not usable on this machine (bubblewrap, Java): its
    message is the one-line fix. A task's `preflight` raises it; the cell fails, or is left
    out as "not run here" when the run allows it (`missing_tools: skip`), since installing
    the tool and rerunning computes it."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries put details below it)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


SECRET_VARIABLE = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
SECRET_PATTERNS = (re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"),  # OpenAI-style API keys
                   re.compile(r"\bhf_[A-Za-z0-9]{20,}"),  # Hugging Face tokens
                   re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{12,}"))
REDACTED = "[redacted]"
_registered: set[str] = set()


def register_secret(value: str) -> None:
    """Redact `value` from now on, whatever the variable it came from is called (a judge's
    key may be read from any variable the user names)."""
    if len(value) >= 8:
        _registered.add(value)


def redact(text: str) -> str:
    """`text` without secrets: the values of environment variables named like keys or
    tokens, registered secrets, and anything shaped like an API key. Applied to every
    message, record, log, cache and leaderboard the harness stores or prints (servers
    echo keys in error bodies and answers)."""
    if not text:
        return text
    secrets = [value for name, value in os.environ.items()
               if len(value) >= 8 and SECRET_VARIABLE.search(name)]
    for value in sorted({*secrets, *_registered}, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


def redact_tree(value: Any) -> Any:
    """`value` (JSON-like: dicts, lists, strings, numbers) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_tree(k): redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    return value
