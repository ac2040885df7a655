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

from harness.fuse.bridge import Bridge
from harness.fuse.caption import FramedText, GuidedObjective, PrimaryLM


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
    """L(x) toward one class of the classifier."""

    def __init__(self, primary: PrimaryLM, classifier: ClassifierText, bridge: Bridge, target: int,
                 lm_weight: float = 1.0, classifier_weight: float = 1.0) -> None:
        super().__init__(primary, bridge, lm_weight, classifier_weight)
        self.classifier, self.target = classifier, target

    def secondary_loss(self, ids_b: Sequence[Sequence[int]], x_b: torch.Tensor | None = None) -> torch.Tensor:
        x_b = None if x_b is None else x_b.to(self.classifier.device)
        logits = self.classifier.logits(ids_b, x_b)
        target = torch.full((len(logits),), self.target, dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target, reduction="none")
