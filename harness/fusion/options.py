"""Options every logit-fusion method shares (torch-free: plugin modules import it at load)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PackOptions:
    """How a pack of models is aligned and where its weights are fitted.

    reference: "auto" picks, per example, the tokenizer of the member with the lowest
        perplexity on the context in its own tokenization (official `select_tokenizer`);
        an integer fixes the tokenizer of that member (0-based), like `--tokenizer_name`.
    weights_on: "context" fits the weights on the context alone (the paper's prompt);
        "sequence" on context plus the scored continuation, as the released downstream code
        does (its weights change per answer option). Generation always fits on the prompt;
        perplexity requests (loglikelihood_rolling) always on the scored window, their
        only text.
    max_length: longest token sequence fed to the members; None takes the smallest
        position limit among them.
    """

    reference: str = "auto"
    weights_on: Literal["context", "sequence"] = "context"
    max_length: int | None = None

    def __post_init__(self) -> None:
        if self.reference != "auto" and not self.reference.isdigit():
            raise ValueError(f"reference must be 'auto' or a member index, got {self.reference!r}")
