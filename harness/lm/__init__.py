"""Shared lm-eval machinery for method plugins (through `harness.api`) and toolkits.

Methods hand lm-eval an `lm_eval.api.model.LM`. Most wrap a (possibly modified)
transformers model; `hf_lm` gives them lm-eval's own HFLM around that object, so batching,
request reordering, the response-cache hooks and generation all come from lm-eval, with one
addition: requests that share a prompt prefix (a few-shot prompt) compute its KV cache once
(`_prefix_cache`, which the fusion toolkit's packs use too; `_token_tree` runs the rows
continuing one prefix, or several short prompts whole, as a single tree-masked sequence). `_batching`: where "auto" batch
sizes start and their halving on out-of-memory.
"""

from __future__ import annotations

from typing import Any

from harness.contract import BuildContext
from harness.lm._batching import AUTO_BATCH_START, batch_backoff, initial_batch_size


def hf_lm(model: Any, tokenizer: Any, ctx: BuildContext, **kwargs: Any) -> Any:
    """lm-eval's HFLM around an already-built transformers model object, sharing prompt
    prefixes' KV caches unless the run turned that off (`harness.lm._prefix_cache`)."""
    from harness.lm._prefix_cache import PrefixCachedHFLM

    return PrefixCachedHFLM(pretrained=model, tokenizer=tokenizer, batch_size=ctx.batch_size,
                            device=ctx.device, prefix_cache=ctx.prefix_cache, **kwargs)


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


__all__ = ["hf_lm", "hf_multimodal_lm", "count_parameters", "AUTO_BATCH_START",
           "initial_batch_size", "batch_backoff"]
