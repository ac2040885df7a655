"""Parity tests run their tiny models on one thread: on these sizes several threads only
contend (the fixture tests took 75 s instead of 21 s on a busy 2-core machine)."""

from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
