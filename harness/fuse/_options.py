"""Options the FUSE methods share (torch-free: plugin modules import it at load)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.contract import BuildContext, option


@dataclass(frozen=True)
class FuseOptions:
    """The search and the adapter, with the released code's defaults."""

    algorithm: Literal["autodan", "gcg"] = option(
        "autodan", "autodan: grow the text one token per step (paper); gcg: swap tokens of a fixed-length text")
    guidance: Literal["fuse", "none", "random"] = option(
        "fuse", "where candidates come from: FUSE gradient + LM logits, the LM logits only, or at random "
                "(the no-gradient baselines, same budget)")
    adjoint: Literal["correct", "official"] = option(
        "correct", "backward through the adapter: the true adjoint (t-transpose, word by word, T by B-token "
                   "count) or the released code's behaviour")
    steps: int = option(16, "search steps (AutoDAN: tokens generated)")
    candidates: int = option(256, "candidates per beam (AutoDAN) or per position (GCG) whose exact objective is evaluated")
    beam_width: int = option(4, "beams kept after each step")
    logit_weight: float = option(1.0, "weight of the primary LM's logits in the AutoDAN candidate score")
    length: int = option(16, "GCG: tokens of the optimised text")
    swaps: int = option(512, "GCG: single-token substitutions sampled per beam and step")
    max_subtokens: int = option(4, "adapter maps T_1..T_K fitted, K = this")
    max_words: int = option(16384, "dictionary words per subtoken count the adapter is fitted on")
    dictionary: str = option(
        "", "word list the adapter is fitted on: a text file, 'wikitext-103' (the paper's, from the "
            "Hugging Face hub), 'wordfreq' or 'wordfreq:N' (the N most frequent English words, default "
            "50,000; pip install wordfreq), 'scene-world' (the zoo's scene world), or empty for the "
            "text shipped with the harness (724 words: too few for a wide model)")
    eval_batch: int = option(64, "sequences per exact-objective forward pass (speed only)")

    def __post_init__(self) -> None:
        for name in ("steps", "candidates", "beam_width", "length", "swaps", "max_subtokens",
                     "max_words", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    def search_config(self) -> Any:
        from harness.fuse._search import SearchConfig

        return SearchConfig(**{name: getattr(self, name) for name in (
            "algorithm", "guidance", "steps", "candidates", "beam_width", "logit_weight",
            "length", "swaps", "eval_batch")})

    def connect(self, a: Any, b: Any, ctx: BuildContext) -> Any:
        """(bridge, adapter report) from side `a` to side `b` (`harness.fuse._bridge.Side`),
        the adapter cached under the run's cache root."""
        from harness.fuse._adapter import AdapterConfig
        from harness.fuse._bridge import connect

        config = AdapterConfig(max_subtokens=self.max_subtokens, max_words=self.max_words)
        return connect(a, b, config, self.dictionary, self.adjoint, ctx.seed, Path(ctx.cache_root))
