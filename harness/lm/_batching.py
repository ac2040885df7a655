"""Batch sizes for the harness's own batched LMs: where "auto" starts, and halving on
out-of-memory."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

# Where "auto" starts for the harness's own batched LMs (lm-eval's HFLM finds its own).
AUTO_BATCH_START = 64
Result = TypeVar("Result")


def initial_batch_size(setting: int | str) -> int:
    """The first batch size to try for a `--batch-size` setting ("auto" or a number)."""
    return AUTO_BATCH_START if setting == "auto" else max(1, int(setting))


def batch_backoff(lm: Any, setting: int | str, run: Callable[[], Result]) -> Result:
    """`run()`, retried with `lm.batch_size` halved each time the accelerator runs out of
    memory, when the batch size is "auto" (a fixed one fails as asked). The LM's requests
    are sorted longest first, so an oversized batch fails at once, not after hours."""
    import torch

    while True:
        try:
            return run()
        except torch.OutOfMemoryError:
            if setting != "auto" or lm.batch_size == 1:
                raise
            lm.batch_size = max(1, lm.batch_size // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
