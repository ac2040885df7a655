"""FUSE (Williams & Kolter, COLM 2024), gradients across tokenizers: the toolkit's face.
Method plugins import these names and nothing else of the package.

- `FuseOptions`: the options both FUSE methods share.
- `Bridge` and `Side`: model A's tokens -> model B's input embeddings, the forward exact, the
  backward through the per-subtoken-count adapters T_k = X_A^+ * X_B (t-products over a
  dictionary of words, fitted zero-shot and cached), "correct" adjoint or the released
  code's "official" behaviour; `word_start_token` finds the token a word starts with.
- `SearchConfig` and `search`: AutoDAN / GCG token search with beams, FUSE-guided or not.
- `CaptionObjective`, `CaptionWeights`, `PrimaryLM`, `ClipText`: zero-shot captioning
  (a causal LM and CLIP).
- `Member`, `discover`, `SEPARATOR`: prompt discovery against a pack of models with
  different tokenizers.

Every name but `FuseOptions` imports torch, on first use. `python -m harness.fuse.claims`
runs the claim experiment.
"""

from typing import TYPE_CHECKING

from harness.fuse._options import FuseOptions
from harness.toolkit import lazy_names

if TYPE_CHECKING:
    from harness.fuse._bridge import Bridge, Side
    from harness.fuse._caption import CaptionObjective, CaptionWeights, ClipText, PrimaryLM
    from harness.fuse._prompt import SEPARATOR, Member, discover
    from harness.fuse._search import SearchConfig, search
    from harness.fuse._words import word_start_token

__all__ = ["FuseOptions", "Bridge", "Side", "word_start_token", "SearchConfig", "search",
           "CaptionObjective", "CaptionWeights", "PrimaryLM", "ClipText", "Member", "discover",
           "SEPARATOR"]

__getattr__ = lazy_names(__name__, {
    "Bridge": "_bridge", "Side": "_bridge", "word_start_token": "_words",
    "SearchConfig": "_search", "search": "_search", "CaptionObjective": "_caption",
    "CaptionWeights": "_caption", "PrimaryLM": "_caption", "ClipText": "_caption",
    "Member": "_prompt", "discover": "_prompt", "SEPARATOR": "_prompt"})
