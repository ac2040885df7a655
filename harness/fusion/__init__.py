"""Test-time fusion of a pack of language models (PackLLM and its baselines): the toolkit's
face. Method plugins import these names and nothing else of the package.

- `PackOptions`: the options every fusion method shares.
- `build_pack_lm`: the lm-eval `LM` that runs the pack and fuses next-token distributions
  per example over MinED-aligned vocabularies (cached on disk); `tokenizer_families` groups
  the members that share a tokenizer.
- `Weighting` and its rules: PackLLM's perplexity softmax (sim) and greedy grid (opt),
  top-1 and DExperts' expert contrast (uniform is the perplexity softmax at infinite
  temperature).

Every name but `PackOptions` imports torch, on first use.
"""

from typing import TYPE_CHECKING

from harness.fusion._options import PackOptions
from harness.toolkit import lazy_names

if TYPE_CHECKING:
    from harness.fusion._pack_lm import build_pack_lm, tokenizer_families
    from harness.fusion._weights import (ExpertContrast, GreedyGrid, PerplexitySoftmax, TopOne,
                                         Weighting)

__all__ = ["PackOptions", "build_pack_lm", "tokenizer_families", "Weighting", "PerplexitySoftmax",
           "GreedyGrid", "TopOne", "ExpertContrast"]

__getattr__ = lazy_names(__name__, {
    "build_pack_lm": "_pack_lm", "tokenizer_families": "_pack_lm", "Weighting": "_weights",
    "PerplexitySoftmax": "_weights", "GreedyGrid": "_weights", "TopOne": "_weights",
    "ExpertContrast": "_weights"})
