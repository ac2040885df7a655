"""CALM on two transformers models: the anchor stays the transformers model (so lm-eval's
HFLM batches, pads and generates with it as with any model) and gains a `calm` submodule
with the connections; the augmenting model runs beside it.

Hooks carry the composition. A forward pre-hook on the anchor runs the augmenting model on
the same token ids, attention mask and positions, each model with its own KV cache, and
keeps the outputs of the connected augmenting layers. A forward hook on each connected
anchor layer adds that connection's cross-attention to the layer's output, which is the
next layer's input.

Iterative decoding (the paper's): the augmenting model sees every token, generated ones
included. A call whose anchor cache is empty (or absent) starts a sequence; a call that
continues a cache appends the new tokens' augmenting states to those kept from the earlier
calls, so anchor position t can read augmenting positions <= t whether or not the caller
caches. In the "causal" layout that is also all it may read, padding excluded; the
"deepmind" layout passes no mask, as the released code does.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from harness.api import UsageError, freeze

from .config import CalmOptions, parse_connections
from .layer import CrossAttentionConnection, linspace_connections, paper_connections

CACHE_ARGUMENTS = ("cache", "past_key_values")  # transformers 5.x / earlier spelling


def decoder_layers(model: Any) -> nn.ModuleList:
    """The transformer blocks of a causal LM, in order (Llama-style `layers`, GPT-2 `h`)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    for name in ("layers", "h"):
        blocks = getattr(decoder, name, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise UsageError(f"calm: cannot find the decoder layers of {type(model).__name__}")


def resolve_connections(options: CalmOptions, anchor_layers: int, augmenting_layers: int
                        ) -> list[tuple[int, int]]:
    """(anchor layer, augmenting layer) pairs, 0-indexed layer outputs."""
    if options.connections:
        pairs = parse_connections(options.connections)
        for anchor, augmenting in pairs:
            if not -1 <= anchor < anchor_layers or augmenting >= augmenting_layers:
                raise UsageError(f"calm: connection {anchor}:{augmenting} is out of range (the "
                                 f"anchor has {anchor_layers} layers, the augmenting model "
                                 f"{augmenting_layers})")
        return pairs
    count = len(paper_connections(anchor_layers, augmenting_layers, options.every))
    if options.layout == "deepmind":
        return linspace_connections(count, anchor_layers, augmenting_layers)
    return paper_connections(anchor_layers, augmenting_layers, options.every)


class Calm(nn.Module):
    """The trainable part, registered on the anchor as `calm`: one
    `CrossAttentionConnection` per (anchor, augmenting) pair, plus the per-sequence state
    (augmenting cache, kept augmenting states, key mask) that the hooks share."""

    augmenting: Any  # a transformers causal LM (typed loosely: nn.Module's lookup is untyped)

    def __init__(self, anchor: Any, augmenting: Any,
                 pairs: list[tuple[int, int]], options: CalmOptions) -> None:
        super().__init__()
        anchor_config = anchor.config.get_text_config()
        augmenting_config = augmenting.config.get_text_config()
        heads = options.num_heads or anchor_config.num_attention_heads
        device = next(anchor.parameters()).device
        causal = options.layout == "causal"
        self.pairs = pairs
        self.causal = causal
        self.connections = nn.ModuleList(
            CrossAttentionConnection(anchor_config.hidden_size, augmenting_config.hidden_size,
                                     heads, zero_output=causal, post_norm=not causal,
                                     norm_eps=getattr(anchor_config, "rms_norm_eps", 1e-6),
                                     device=device)
            for _ in pairs)
        # a plain attribute, not a submodule: its weights are no part of the anchor's
        # parameters, state dict or fit checkpoints
        self.__dict__["augmenting"] = augmenting
        self._kept: dict[int, torch.Tensor] = {}
        self._key_mask: torch.Tensor | None = None
        self._augmenting_cache: Any = None
        self._allowed: torch.Tensor | None = None
        self._handles: list[Any] = []

    @property
    def forward_only_models(self) -> tuple[Any, ...]:
        """What the harness's cost adds to a fit's FLOPs as forward passes without gradients."""
        return (self.augmenting,)

    # ------------------------------------------------------------------ per-call state

    def start(self, anchor: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Run the augmenting model for an anchor call and prepare the cross-attention."""
        if kwargs.get("inputs_embeds") is not None:
            raise UsageError("calm: the anchor was called with inputs_embeds; CALM feeds the "
                             "same token ids to both models, pass input_ids")
        input_ids = args[0] if args else kwargs.get("input_ids")
        if input_ids is None or len(args) > 1:
            raise UsageError("calm: call the composed model with input_ids (keyword arguments "
                             "after it)")
        anchor_cache = next((kwargs[k] for k in CACHE_ARGUMENTS if kwargs.get(k) is not None), None)
        continuing = anchor_cache is not None and anchor_cache.get_seq_length() > 0
        if not continuing:
            self._kept, self._key_mask = {}, None
            self._augmenting_cache = None
            if anchor_cache is not None:
                from transformers import DynamicCache

                self._augmenting_cache = DynamicCache(config=self.augmenting.config)
        elif self._augmenting_cache is None or not self._kept:
            raise UsageError("calm: the anchor continues a cache the augmenting model did not "
                             "see; start the sequence through the composed model")
        past = self._key_mask.shape[1] if continuing and self._key_mask is not None else 0
        new = input_ids.shape[1]
        self._run_augmenting(input_ids, kwargs)
        attention_mask = kwargs.get("attention_mask")
        if attention_mask is None or attention_mask.dim() != 2:
            fresh = torch.ones(input_ids.shape, dtype=torch.bool, device=input_ids.device)
        else:  # the 2-D mask covers the cached positions too
            fresh = attention_mask[:, -new:].bool()
        self._key_mask = (torch.cat([self._key_mask, fresh], dim=1)
                          if continuing and self._key_mask is not None else fresh)
        if not self.causal:
            self._allowed = None
            return
        total = self._key_mask.shape[1]
        queries = torch.arange(past, past + new, device=input_ids.device)
        keys = torch.arange(total, device=input_ids.device)
        self._allowed = (keys[None, None, :] <= queries[None, :, None]) & self._key_mask[:, None, :]

    def _run_augmenting(self, input_ids: torch.Tensor, kwargs: dict[str, Any]) -> None:
        augmenting = self.augmenting
        accepted = inspect.signature(augmenting.forward).parameters
        call = {k: kwargs[k] for k in ("attention_mask", "position_ids", "cache_position")
                if kwargs.get(k) is not None and k in accepted}
        if self._augmenting_cache is not None:
            cache_key = next(k for k in CACHE_ARGUMENTS if k in accepted)
            call |= {cache_key: self._augmenting_cache, "use_cache": True}
        else:
            call["use_cache"] = False
        captured: dict[int, torch.Tensor] = {}
        layers = decoder_layers(augmenting)
        handles = [layers[index].register_forward_hook(_capture(captured, index))
                   for index in {augmenting_index for _, augmenting_index in self.pairs}]
        try:
            with torch.no_grad():
                augmenting.eval()
                augmenting(input_ids=input_ids, **call)
        finally:
            for handle in handles:
                handle.remove()
        for index, states in captured.items():
            self._kept[index] = (states if index not in self._kept
                                 else torch.cat([self._kept[index], states], dim=1))

    def connect(self, position: int, anchor_states: torch.Tensor) -> torch.Tensor:
        _, augmenting_index = self.pairs[position]
        return self.connections[position](anchor_states, self._kept[augmenting_index],
                                          self._allowed)

    def reset(self) -> None:
        self._kept, self._key_mask, self._augmenting_cache, self._allowed = {}, None, None, None


def _capture(captured: dict[int, torch.Tensor], index: int) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        captured[index] = output[0] if isinstance(output, tuple) else output
    return hook


def _connect(calm: Calm, position: int) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (calm.connect(position, output[0]), *output[1:])
        return calm.connect(position, output)
    return hook


def _connect_embedding_output(calm: Calm, position: int) -> Any:
    """A pre-hook on the first anchor layer: its input is the embedding output."""
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (calm.connect(position, args[0]), *args[1:]), kwargs
        return args, kwargs | {"hidden_states": calm.connect(position, kwargs["hidden_states"])}
    return hook


def compose(anchor: nn.Module, augmenting: nn.Module, options: CalmOptions) -> Calm:
    """Freeze both models and compose them in place: `anchor` becomes the composed model
    (its `calm` submodule holds the trainable connections)."""
    freeze(anchor)
    freeze(augmenting)
    augmenting.eval()
    anchor_blocks, augmenting_blocks = decoder_layers(anchor), decoder_layers(augmenting)
    pairs = resolve_connections(options, len(anchor_blocks), len(augmenting_blocks))
    calm = Calm(anchor, augmenting, pairs, options)
    calm._handles.append(anchor.register_forward_pre_hook(
        lambda module, args, kwargs: calm.start(module, args, kwargs), with_kwargs=True))
    for position, (anchor_index, _) in enumerate(pairs):
        calm._handles.append(
            anchor_blocks[0].register_forward_pre_hook(_connect_embedding_output(calm, position),
                                                       with_kwargs=True)
            if anchor_index == -1 else
            anchor_blocks[anchor_index].register_forward_hook(_connect(calm, position)))
    anchor.add_module("calm", calm)
    return calm
