"""Fixtures for the adapter tests: tiny zoo models and an isolated fit cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from adapters.adapters_support import TEST_DEVICE, TINY_LLAMA

from harness.contract import ModelRef


@pytest.fixture(autouse=True)
def isolated_fits(tmp_path: Path) -> Path:
    """Every test fits into its own cache folder (`build_context` puts the fit cache of a
    test's contexts under its tmp_path; the zoo cache stays shared)."""
    return tmp_path / "cache" / "fits"


@pytest.fixture
def load_tiny() -> Callable[[], tuple[Any, Any]]:
    """A fresh tiny-llama (4 layers, 4 query / 2 key-value heads) and its tokenizer."""
    from harness.models.loading import load_causal_lm

    def load() -> tuple[Any, Any]:
        model, tokenizer = load_causal_lm(ModelRef(TINY_LLAMA, dtype="float32", device=TEST_DEVICE))
        return model, tokenizer
    return load

