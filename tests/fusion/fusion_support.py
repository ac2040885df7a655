"""Shared pieces of the fusion tests: lm-eval-shaped requests and a recording cache hook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Request:
    """The part of lm-eval's Instance the LM reads."""

    args: tuple[Any, ...]
    doc: dict[str, Any] | None = None


class RecordingHook:
    """Stands in for lm-eval's CacheHook: remembers every add_partial call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        self.calls.append((attr, req, res))
