"""FUSE's classifier-guided case: a causal LM writes, a classifier with another tokenizer
steers it toward a class.

    L(x) = w_lm * NLL_A(prefix + x) + w_cls * CE(classifier(<start> prefix x <end>), target)

The classifier reads x's text in its own tokens (through a `Bridge`: exact forward, FUSE
backward), as the released code adds a sentiment classifier's cross-entropy toward a label.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from harness.fuse._bridge import Bridge
from harness.fuse._caption import FramedText, GuidedObjective, PrimaryLM


class ClassifierText(FramedText):
    """A sequence classifier (`AutoModelForSequenceClassification`) around a caption."""

    def __init__(self, model: Any, tokenizer: Any, prefix: str) -> None:
        super().__init__(model.get_input_embeddings(), tokenizer, prefix,
                         model.config.max_position_embeddings)
        self.model = model

    def logits(self, ids_b: Sequence[Sequence[int]], x_b: torch.Tensor | None = None) -> torch.Tensor:
        """(n, classes); with `x_b` (n, L, d_B) the caption's input embeddings come from it."""
        frame = self.frame(ids_b)
        with self.substituted(frame, x_b):
            return self.model(input_ids=frame.ids, attention_mask=frame.attention).logits.float()


class AttributeObjective(GuidedObjective):
    """L(x) toward a target class in each of the classifier's heads: `heads` are slices of
    its logits, each a softmax of its own (default: one head, all logits), and the
    classifier term is the sum of their cross-entropies."""

    def __init__(self, primary: PrimaryLM, classifier: ClassifierText, bridge: Bridge,
                 targets: Sequence[int], heads: Sequence[slice] = (slice(None),),
                 lm_weight: float = 1.0, classifier_weight: float = 1.0) -> None:
        if len(targets) != len(heads):
            raise ValueError(f"one target per head: {len(targets)} targets, {len(heads)} heads")
        super().__init__(primary, bridge, lm_weight, classifier_weight)
        self.classifier, self.targets, self.heads = classifier, tuple(targets), tuple(heads)

    def secondary_loss(self, ids_b: Sequence[Sequence[int]], x_b: torch.Tensor | None = None) -> torch.Tensor:
        x_b = None if x_b is None else x_b.to(self.classifier.device)
        logits = self.classifier.logits(ids_b, x_b)
        total = torch.zeros(len(logits), device=logits.device)
        for head, target in zip(self.heads, self.targets):
            classes = torch.full((len(logits),), target, dtype=torch.long, device=logits.device)
            total = total + F.cross_entropy(logits[:, head], classes, reduction="none")
        return total
