"""Options every logit-fusion method shares (torch-free: plugin modules import it at load)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.contract import option

# What each protocol sets for (reference_on, weights_on, option_score).
PROTOCOLS = {
    "harness": ("context", "context", "sum"),
    "official": ("question", "sequence", "mean"),
}


@dataclass(frozen=True)
class PackOptions:
    """How a pack of models is aligned, where its weights are fitted and how answers score.

    `protocol` presets reference_on, weights_on and option_score: "harness" (the default)
    is this harness's reading of the paper, and each of the three can still be changed on
    its own; "official" is what the released downstream pipeline does, to reproduce its
    numbers, and refuses a setting that contradicts it. The resolved values are what the
    options record.
    """

    reference: str = option("auto", "'auto': per example, the tokenizer of the member with the "
                                    "lowest perplexity on the reference text in its own "
                                    "tokenization (official select_tokenizer); a member index "
                                    "(0-based) fixes that member's tokenizer (--tokenizer_name)")
    max_length: int | None = option(None, "longest token sequence fed to the members; empty: "
                                          "the smallest position limit among them")
    protocol: Literal["harness", "official"] = option(
        "harness", "preset of reference_on, weights_on and option_score: harness = "
                   "context/context/sum, official = question/sequence/mean (the released code)")
    reference_on: Literal["context", "question"] | None = option(
        None, "the text 'auto' picks the reference tokenizer on: the request's whole context "
              "(few-shot demonstrations included) or the document's question alone "
              "(question_field, as the released code); empty: the protocol's")
    weights_on: Literal["context", "sequence"] | None = option(
        None, "fit the weights on the context alone (the paper's prompt) or on context plus "
              "the scored continuation (the released code: weights change per answer option); "
              "generation fits on its prompt, perplexity requests on their window; empty: the "
              "protocol's")
    option_score: Literal["sum", "mean"] | None = option(
        None, "a continuation's log-likelihood as lm-eval defines it (sum over its tokens) or "
              "its per-token mean (the released code ranks options by mean loss); empty: the "
              "protocol's")
    question_field: str = option("question", "the document field reference_on=question reads")

    def __post_init__(self) -> None:
        if self.reference != "auto" and not self.reference.isdigit():
            raise ValueError(f"reference must be 'auto' or a member index, got {self.reference!r}")
        names = ("reference_on", "weights_on", "option_score")
        for name, preset in zip(names, PROTOCOLS[self.protocol]):
            given = getattr(self, name)
            if given is None:
                object.__setattr__(self, name, preset)  # recorded resolved, as evaluated
            elif given != preset and self.protocol == "official":
                raise ValueError(f"protocol=official sets {name}={preset}; drop {name}={given} "
                                 "or use protocol=harness")
