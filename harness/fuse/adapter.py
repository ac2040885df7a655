"""The FUSE adapter: one linear map per subtoken count between two embedding spaces.

A word that the secondary model B splits into k tokens is, on each side, a d x k matrix of
its token embeddings (a tube per embedding dimension); n such words stack into a tensor
X in R^{n x d x k}. For every k the adapter is the least-squares map in the t-product
algebra, T_k = X_A^+ * X_B in R^{d_A x d_B x k}, where X_B holds B's embeddings of the
dictionary words with exactly k B-tokens and X_A the primary model A's embeddings of the
same words, cut or zero-padded to k tokens. The fit is zero-shot (two embedding tables
and a word list), seeded, and cached on disk by (A, B, dictionary, k).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from harness.fuse.tensor import t_least_squares, t_transpose
from harness.fuse.words import Dictionary, word_token_ids
from harness.store import fingerprint

ADAPTER_VERSION = 1


@dataclass(frozen=True)
class AdapterConfig:
    """How an adapter is fitted. `max_words` bounds the words per subtoken count (the
    released configuration uses 16,834, its README 8,192; 16,384 is the paper's count)."""

    max_subtokens: int = 4
    max_words: int = 16384

    def __post_init__(self) -> None:
        if self.max_subtokens < 1:
            raise ValueError("max_subtokens must be at least 1")
        if self.max_words < 1:
            raise ValueError("max_words must be at least 1")


@dataclass(frozen=True)
class Adapter:
    """T_k for k = 1..K (index k - 1), with the number of words each was fitted on."""

    maps: tuple[torch.Tensor, ...]
    words: tuple[int, ...]

    @property
    def max_subtokens(self) -> int:
        return len(self.maps)

    def to(self, device: torch.device | str) -> "Adapter":
        return Adapter(tuple(t.to(device) for t in self.maps), self.words)

    def transposed(self) -> tuple[torch.Tensor, ...]:
        """T_k^T (the t-transpose) for every k: what the backward multiplies by."""
        return tuple(t_transpose(t) for t in self.maps)


def word_tensor(embeddings: torch.Tensor, ids: Sequence[Sequence[int]], k: int) -> torch.Tensor:
    """(n, d, k): each word's token embeddings as columns, cut or zero-padded to k tokens."""
    n, d = len(ids), embeddings.shape[1]
    stacked = torch.zeros(n, k, d, dtype=embeddings.dtype, device=embeddings.device)
    for row, word in enumerate(ids):
        kept = list(word[:k])
        stacked[row, :len(kept)] = embeddings[kept]
    return stacked.transpose(1, 2)


def fit_adapter(embeddings_a: torch.Tensor, embeddings_b: torch.Tensor,
                ids_a: Sequence[Sequence[int]], ids_b: Sequence[Sequence[int]],
                config: AdapterConfig, counts: Sequence[int] | None = None) -> Adapter:
    """T_k = X_A^+ * X_B for every k in `counts` (default 1..K), from the dictionary words'
    token ids on both sides (in dictionary order; the first `max_words` with k B-tokens).

    A count without any word gets a zero map: no word of that length is known, so its
    words pass no gradient.
    """
    table_a, table_b = embeddings_a.detach().float(), embeddings_b.detach().float()
    maps, fitted = [], []
    for k in counts or range(1, config.max_subtokens + 1):
        chosen = [i for i, (a, b) in enumerate(zip(ids_a, ids_b)) if len(b) == k and a]
        chosen = chosen[:config.max_words]
        if not chosen:
            maps.append(torch.zeros(table_a.shape[1], table_b.shape[1], k, device=table_a.device))
        else:
            x_a = word_tensor(table_a, [ids_a[i] for i in chosen], k)
            x_b = word_tensor(table_b, [ids_b[i] for i in chosen], k)
            maps.append(t_least_squares(x_a, x_b))
        fitted.append(len(chosen))
    return Adapter(tuple(maps), tuple(fitted))


def load_or_fit_adapter(identity_a: Any, identity_b: Any, embeddings_a: torch.Tensor,
                        embeddings_b: torch.Tensor, tokenizer_a: Any, tokenizer_b: Any,
                        dictionary: Dictionary, config: AdapterConfig, cache_root: Path) -> Adapter:
    """The adapter from A to B, each T_k read from `<cache_root>/fuse-adapters`, keyed by
    (A identity, B identity, dictionary hash, k, max_words), or fitted and stored there."""
    device = embeddings_a.device
    keys = {k: fingerprint({"version": ADAPTER_VERSION, "a": identity_a, "b": identity_b,
                            "dictionary": dictionary.digest, "k": k,
                            "max_words": config.max_words})
            for k in range(1, config.max_subtokens + 1)}
    paths = {k: Path(cache_root) / "fuse-adapters" / f"k{k}-{key[:32]}.pt" for k, key in keys.items()}
    cached = {k: torch.load(p, map_location=device, weights_only=True)
              for k, p in paths.items() if p.is_file()}
    missing = [k for k in paths if k not in cached]
    if missing:
        ids_a = word_token_ids(tokenizer_a, dictionary.words)
        ids_b = word_token_ids(tokenizer_b, dictionary.words)
        fitted = fit_adapter(embeddings_a, embeddings_b, ids_a, ids_b, config, missing)
        for k, t, words in zip(missing, fitted.maps, fitted.words):
            cached[k] = {"map": t.cpu(), "words": words}
            _atomic_save(cached[k], paths[k])
    ordered = [cached[k] for k in sorted(paths)]
    return Adapter(tuple(entry["map"].to(device) for entry in ordered),
                   tuple(int(entry["words"]) for entry in ordered))


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, staging)
    os.replace(staging, path)
