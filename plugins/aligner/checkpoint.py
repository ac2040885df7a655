"""Aligner adapters in the official Lit-LLaMA format: read the released ones, write ours.

The official code saves `adapter_state_from_state_dict(model.state_dict())`:

    global_value_embedding.weight               [N, d]        the prefix P
    transformer.h.{i}.attn.adapter_wte.weight   [N, d]        P again, once per adapted layer
    transformer.h.{i}.attn.gating_factor        [1, H, 1, 1]  layer i's gates (early files: one value)

Lit-LLaMA permutes W_Q and W_K within each head for its interleaved RoPE, but keeps the
head order, and P lives in the embedding space, so P and the gates carry over to the Hugging
Face model unchanged (the prefix keys see the same permutation as the queries they meet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.api import DataError, UsageError

from .model import Aligner, inject_aligner

PREFIX_KEY = "global_value_embedding.weight"
GATE_KEY = re.compile(r"transformer\.h\.(\d+)\.attn\.gating_factor")
PREFIX_COPY_KEY = re.compile(r"transformer\.h\.(\d+)\.attn\.adapter_wte\.weight")


@dataclass(frozen=True)
class OfficialCheckpoint:
    """The prefix P (N x d) and, by layer index, the (1, H, 1, 1) gates of one adapter."""

    prefix: torch.Tensor
    gates: dict[int, torch.Tensor]

    @property
    def num_tokens(self) -> int:
        return self.prefix.shape[0]

    @property
    def start_layer(self) -> int:
        return min(self.gates)


def read_official(path: Path) -> OfficialCheckpoint:
    """The adapter stored at `path` (a `.pth` of the official `aligner_weights/`)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"aligner checkpoint {path} not found") from None
    except Exception as exc:  # torch raises several types for a file that is no checkpoint
        raise DataError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or PREFIX_KEY not in state:
        raise DataError(f"{path}: no {PREFIX_KEY!r}; not an official Aligner checkpoint")
    prefix = state[PREFIX_KEY]
    gates = {int(m.group(1)): value for key, value in state.items()
             if (m := GATE_KEY.fullmatch(key))}
    if prefix.dim() != 2 or not gates:
        raise DataError(f"{path}: expected an [N, d] prefix and per-layer gating factors")
    for key, value in state.items():
        if PREFIX_COPY_KEY.fullmatch(key) and not torch.equal(value, prefix):
            raise DataError(f"{path}: {key} differs from the global prefix (a per-layer "
                            "LLaMA-Adapter checkpoint, not Aligner)")
    layers = sorted(gates)
    if layers != list(range(layers[0], layers[0] + len(layers))):
        raise DataError(f"{path}: gated layers {layers} are not contiguous")
    return OfficialCheckpoint(prefix, gates)


def load_official(model: Any, path: Path, num_tokens: int, start_layer: int) -> Aligner:
    """Freeze `model`, attach Aligner and fill it from the official checkpoint at `path`.

    `num_tokens` and `start_layer` are what the caller asked for; they must agree with the
    file, so the options recorded with a result describe the adapter evaluated.
    """
    checkpoint = read_official(path)
    config = model.config.get_text_config()
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    if (checkpoint.num_tokens, checkpoint.start_layer) != (num_tokens, start_layer):
        raise UsageError(f"aligner: {path} holds N={checkpoint.num_tokens} prefix tokens from "
                         f"layer {checkpoint.start_layer}; pass -o num_tokens="
                         f"{checkpoint.num_tokens} -o start_layer={checkpoint.start_layer}")
    if checkpoint.prefix.shape[1] != config.hidden_size or max(checkpoint.gates) != layers - 1:
        raise DataError(f"aligner: {path} fits a model of width {checkpoint.prefix.shape[1]} "
                        f"and {max(checkpoint.gates) + 1} layers, not {config.hidden_size} and "
                        f"{layers} ({model.name_or_path})")
    aligner = inject_aligner(model, num_tokens, start_layer)
    with torch.no_grad():
        aligner.prefix.copy_(checkpoint.prefix)
        for gate, layer in zip(aligner.gates, range(start_layer, layers)):
            stored = checkpoint.gates[layer]
            if stored.numel() not in (1, heads):
                raise DataError(f"aligner: {path} has {stored.numel()} gates in layer {layer} "
                                f"for {heads} heads")
            gate.copy_(stored.reshape(-1).expand(heads).reshape(gate.shape))  # one value: all heads
    return aligner


def official_state_dict(aligner: Aligner) -> dict[str, torch.Tensor]:
    """`aligner` in the official format (what its `load_state_dict` and `generate` read)."""
    prefix = aligner.prefix.detach().cpu()
    state = {PREFIX_KEY: prefix.clone()}
    for layer, gate in zip(range(aligner.start_layer, aligner.start_layer + len(aligner.gates)),
                           aligner.gates):
        state[f"transformer.h.{layer}.attn.gating_factor"] = gate.detach().cpu().clone()
        state[f"transformer.h.{layer}.attn.adapter_wte.weight"] = prefix.clone()
    return state
