"""FUSE zero-shot captioning: a causal LM writes, a CLIP model with another tokenizer judges.

The objective of a caption x (primary-model tokens after the prefix), as in the released
code's default configuration:

    L(x) = w_lm * NLL_A(prefix + x) + w_clip * (1 - cos(CLIP_text(prefix + FUSE(x)), CLIP_image))

NLL_A is the primary model's mean next-token loss over the whole sequence after its first
token; CLIP reads <start> + its own tokens of the prefix + its tokens of x's text + <end>
and is pooled at <end>; both embeddings are L2-normalised. Only the CLIP term is
differentiated (through FUSE); the primary model enters candidate selection through its
logits and the exact objective, as in the released code.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from harness.errors import UsageError
from harness.fuse.bridge import Bridge, splice
from harness.fuse.words import printable_tokens


@dataclass(frozen=True)
class CaptionWeights:
    lm: float = 1.0
    clip: float = 22.0


class PrimaryLM:
    """The causal LM being optimised over: its logits after fixed leading tokens, its NLL."""

    def __init__(self, model: Any, tokenizer: Any, prefix_ids: Sequence[int]) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.embeddings = model.get_input_embeddings().weight
        self.device = self.embeddings.device
        if not len(prefix_ids):
            raise UsageError("the prefix is empty and the primary tokenizer adds no start token: "
                             "give a prefix (-o prefix=...)")
        self.prefix = torch.tensor(list(prefix_ids), dtype=torch.long, device=self.device)
        self.allowed = torch.tensor(printable_tokens(tokenizer, self.embeddings.shape[0]),
                                    device=self.device)

    @classmethod
    def with_text_prefix(cls, model: Any, tokenizer: Any, prefix: str) -> "PrimaryLM":
        """The prefix tokenised as the tokenizer does by default (GPT-2: no start token, as
        the released code; Llama: <s> first)."""
        return cls(model, tokenizer, tokenizer(prefix)["input_ids"])

    def _with_prefix(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.prefix.expand(len(ids), -1), ids.to(self.device)], dim=1)

    @torch.no_grad()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """(n, L + 1, V): the logits for each of the L tokens after the prefix and the next."""
        return self.model(input_ids=self._with_prefix(ids)).logits[:, len(self.prefix) - 1:]

    @torch.no_grad()
    def nll(self, ids: torch.Tensor) -> torch.Tensor:
        """(n,) mean negative log-likelihood of prefix + ids after the first token."""
        full = self._with_prefix(ids)
        logits = self.model(input_ids=full).logits[:, :-1].float()
        return F.cross_entropy(logits.transpose(1, 2), full[:, 1:], reduction="none").mean(dim=1)


class ClipText:
    """CLIP's text tower around a caption: <start> prefix caption <end>, pooled at <end>."""

    def __init__(self, model: Any, tokenizer: Any, prefix: str) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.token_embedding = model.text_model.get_input_embeddings()
        self.embeddings = self.token_embedding.weight
        self.device = self.embeddings.device
        self.prefix = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        self.start, self.end = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end
        self.max_length = model.config.text_config.max_position_embeddings

    def frame(self, ids_b: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(input ids (n, W), mask of the caption positions, caption start): every caption
        cut to the context, padded after <end> (CLIP attends causally, so padding is inert)."""
        room = self.max_length - 2 - len(self.prefix)
        start = 1 + len(self.prefix)
        rows = [[self.start, *self.prefix, *list(ids)[:room], self.end] for ids in ids_b]
        width = max(len(row) for row in rows)
        frame = torch.full((len(rows), width), self.pad, dtype=torch.long)
        caption = torch.zeros((len(rows), width), dtype=torch.bool)
        for number, row in enumerate(rows):
            frame[number, :len(row)] = torch.tensor(row)
            caption[number, start:len(row) - 1] = True
        return frame.to(self.device), caption.to(self.device), start

    def features(self, ids_b: Sequence[Sequence[int]], x_b: torch.Tensor | None = None) -> torch.Tensor:
        """(n, p) L2-normalised text features; with `x_b` (n, L, d_B) the caption's input
        embeddings are taken from it (so the features are differentiable in x_b) while
        the model runs its own forward and pooling on the same token ids."""
        frame, caption, start = self.frame(ids_b)
        context = contextlib.nullcontext() if x_b is None else \
            self._substituted(x_b, caption, start)
        with context:
            features = self.model.get_text_features(input_ids=frame).pooler_output
        return F.normalize(features.float(), dim=-1)

    @contextlib.contextmanager
    def _substituted(self, x_b: torch.Tensor, caption: torch.Tensor, start: int) -> Iterator[None]:
        def substitute(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
            return splice(output, x_b, start, caption)

        handle = self.token_embedding.register_forward_hook(substitute)
        try:
            yield
        finally:
            handle.remove()

    @torch.no_grad()
    def image_features(self, images: Sequence[Any], processor: Any) -> torch.Tensor:
        pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]
        features = self.model.get_image_features(
            pixel_values=pixels.to(self.device, self.embeddings.dtype)).pooler_output
        return F.normalize(features.float(), dim=-1)


class CaptionObjective:
    """L(x) for one image, over rows of primary-model token ids (an `Objective`)."""

    def __init__(self, primary: PrimaryLM, clip: ClipText, bridge: Bridge,
                 image_features: torch.Tensor, weights: CaptionWeights = CaptionWeights()) -> None:
        self.primary, self.clip, self.bridge = primary, clip, bridge
        self.image = image_features.reshape(-1)
        self.weights = weights
        self.allowed = primary.allowed

    def _clip_loss(self, ids_b: Sequence[Sequence[int]], x_b: torch.Tensor | None = None) -> torch.Tensor:
        return 1 - self.clip.features(ids_b, x_b) @ self.image.to(self.clip.device)

    @torch.no_grad()
    def losses(self, ids: torch.Tensor) -> torch.Tensor:
        clip = self._clip_loss(self.bridge.ids_b(ids.tolist())).to(self.primary.device)
        return self.weights.lm * self.primary.nll(ids) + self.weights.clip * clip

    def gradients(self, ids: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(ids.to(self.primary.device), self.primary.embeddings.shape[0])
        one_hot = one_hot.to(self.primary.embeddings.dtype).requires_grad_(True)
        x_b, ids_b = self.bridge.embed(one_hot @ self.primary.embeddings.detach(), ids.tolist())
        loss = self.weights.clip * self._clip_loss(ids_b, x_b.to(self.clip.device)).sum()
        (gradient,) = torch.autograd.grad(loss, one_hot)
        return gradient

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.primary.logits(ids)
