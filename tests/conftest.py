"""Shared fixtures: an isolated zoo cache per test session, offline hub, CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import SHARED_DATA

# Offline by construction: nothing may reach a model or dataset hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One zoo cache for the session (subprocesses inherit it through the environment)."""
    if "HARNESS_TEST_CACHE" in os.environ:  # reuse across local runs when asked
        path = Path(os.environ["HARNESS_TEST_CACHE"])
    else:
        path = tmp_path_factory.mktemp("harness-cache")
    os.environ["HARNESS_CACHE"] = str(path)
    os.environ.setdefault("HARNESS_DEVICE", "cpu")
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present on this machine")
    return SHARED_DATA
