"""Shared lm-eval machinery for method plugins.

Methods hand lm-eval an `lm_eval.api.model.LM`. Most wrap a (possibly modified)
transformers model; `hf_lm` gives them lm-eval's own HFLM around that object, so batching,
request reordering, the response-cache hooks and generation all come from lm-eval.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from harness.contract import BuildContext

# Where "auto" starts for the harness's own batched LMs (lm-eval's HFLM finds its own).
AUTO_BATCH_START = 64
Result = TypeVar("Result")


def hf_lm(model: Any, tokenizer: Any, ctx: BuildContext, **kwargs: Any) -> Any:
    """lm-eval's HFLM around an already-built transformers model object."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=ctx.batch_size,
                device=ctx.device, **kwargs)


def hf_multimodal_lm(model: Any, ctx: BuildContext, **kwargs: Any) -> Any:
    """lm-eval's HFMultimodalLM ("hf-multimodal") around a built vision-language model.

    It answers image+text requests (tasks with `doc_to_image`) and falls back to HFLM's
    text paths for text-only ones; the processor comes from the model's directory.
    """
    from lm_eval.models.hf_vlms import HFMultimodalLM

    return HFMultimodalLM(pretrained=model, batch_size=ctx.batch_size, device=ctx.device, **kwargs)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


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
