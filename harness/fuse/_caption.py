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
from harness.fuse._bridge import Bridge, splice
from harness.fuse._words import printable_tokens


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


@dataclass(frozen=True)
class Frame:
    """What a secondary model reads: <start> prefix caption <end>, right-padded."""

    ids: torch.Tensor  # (n, W)
    caption: torch.Tensor  # (n, W) bool: the caption's positions
    start: int  # where every caption starts
    attention: torch.Tensor  # (n, W) 1 up to each row's <end>, 0 on padding


class FramedText:
    """A secondary model's text input around a caption: <start> prefix caption <end>, whose
    caption embeddings can be substituted (differentiably) while the model runs its own
    forward on the same token ids."""

    def __init__(self, token_embedding: Any, tokenizer: Any, prefix: str, max_length: int) -> None:
        self.tokenizer, self.token_embedding = tokenizer, token_embedding
        self.embeddings = token_embedding.weight
        self.device = self.embeddings.device
        self.prefix = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        self.start, self.end = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end
        self.max_length = max_length

    def frame(self, ids_b: Sequence[Sequence[int]]) -> Frame:
        """Every caption cut to the context, padded after <end>."""
        room = self.max_length - 2 - len(self.prefix)
        start = 1 + len(self.prefix)
        rows = [[self.start, *self.prefix, *list(ids)[:room], self.end] for ids in ids_b]
        width = max(len(row) for row in rows)
        frame = torch.full((len(rows), width), self.pad, dtype=torch.long)
        caption = torch.zeros((len(rows), width), dtype=torch.bool)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for number, row in enumerate(rows):
            frame[number, :len(row)] = torch.tensor(row)
            caption[number, start:len(row) - 1] = True
            attention[number, :len(row)] = 1
        return Frame(frame.to(self.device), caption.to(self.device), start, attention.to(self.device))

    def substituted(self, frame: Frame, x_b: torch.Tensor | None) -> contextlib.AbstractContextManager[None]:
        """Within it, the caption's input embeddings come from `x_b` (n, L, d_B) (None: the
        model's own)."""
        if x_b is None:
            return contextlib.nullcontext()
        return self._substituted(x_b, frame.caption, frame.start)

    @contextlib.contextmanager
    def _substituted(self, x_b: torch.Tensor, caption: torch.Tensor, start: int) -> Iterator[None]:
        def substitute(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
            return splice(output, x_b, start, caption)

        handle = self.token_embedding.register_forward_hook(substitute)
        try:
            yield
        finally:
            handle.remove()


class ClipText(FramedText):
    """CLIP's text tower around a caption, pooled at <end> (CLIP attends causally, so the
    padding after <end> is inert)."""

    def __init__(self, model: Any, tokenizer: Any, prefix: str) -> None:
        super().__init__(model.text_model.get_input_embeddings(), tokenizer, prefix,
                         model.config.text_config.max_position_embeddings)
        self.model = model

    def features(self, ids_b: Sequence[Sequence[int]], x_b: torch.Tensor | None = None) -> torch.Tensor:
        """(n, p) L2-normalised text features; with `x_b` (n, L, d_B) the caption's input
        embeddings are taken from it (so the features are differentiable in x_b) while
        the model runs its own forward and pooling on the same token ids."""
        frame = self.frame(ids_b)
        with self.substituted(frame, x_b):
            features = self.model.get_text_features(input_ids=frame.ids).pooler_output
        return F.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def image_features(self, images: Sequence[Any], processor: Any) -> torch.Tensor:
        pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]
        features = self.model.get_image_features(
            pixel_values=pixels.to(self.device, self.embeddings.dtype)).pooler_output
        return F.normalize(features.float(), dim=-1)


class GuidedObjective:
    """L(x) = w_lm * NLL_A(prefix + x) + w_secondary * (a secondary model's loss on x's text),
    over rows of primary-model token ids (an `Objective`). Only the secondary term is
    differentiated, through the bridge; subclasses say what that term is."""

    def __init__(self, primary: PrimaryLM, bridge: Bridge, lm_weight: float,
                 secondary_weight: float) -> None:
        self.primary, self.bridge = primary, bridge
        self.lm_weight, self.secondary_weight = lm_weight, secondary_weight
        self.allowed = primary.allowed

    def secondary_loss(self, ids_b: Sequence[Sequence[int]], x_b: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) the secondary model's loss on B's token ids (its inputs from `x_b` if given)."""
        raise NotImplementedError

    @torch.no_grad()
    def losses(self, ids: torch.Tensor) -> torch.Tensor:
        secondary = self.secondary_loss(self.bridge.ids_b(ids.tolist())).to(self.primary.device)
        return self.lm_weight * self.primary.nll(ids) + self.secondary_weight * secondary

    def gradients(self, ids: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(ids.to(self.primary.device), self.primary.embeddings.shape[0])
        one_hot = one_hot.to(self.primary.embeddings.dtype).requires_grad_(True)
        x_b, ids_b = self.bridge.embed_one_hot(one_hot, self.primary.embeddings.detach(), ids.tolist())
        loss = self.secondary_weight * self.secondary_loss(ids_b, x_b).sum()
        (gradient,) = torch.autograd.grad(loss, one_hot)
        return gradient

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.primary.logits(ids)


class CaptionObjective(GuidedObjective):
    """The captioning objective for one image: the secondary term is 1 - cos(CLIP text, image)."""

    def __init__(self, primary: PrimaryLM, clip: ClipText, bridge: Bridge,
                 image_features: torch.Tensor, weights: CaptionWeights = CaptionWeights()) -> None:
        super().__init__(primary, bridge, weights.lm, weights.clip)
        self.clip = clip
        self.image = image_features.reshape(-1)

    def secondary_loss(self, ids_b: Sequence[Sequence[int]], x_b: torch.Tensor | None = None) -> torch.Tensor:
        x_b = None if x_b is None else x_b.to(self.clip.device)
        return 1 - self.clip.features(ids_b, x_b) @ self.image.to(self.clip.device)
