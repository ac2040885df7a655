"""The FUSE adapter: one linear map per subtoken count between two embedding spaces.

A word that the secondary model B splits into k tokens is, on each side, a d x k matrix of
its token embeddings (a tube per embedding dimension); n such words stack into a tensor
X in R^{n x d x k}. For every k the adapter is the least-squares map in the t-product
algebra, T_k = X_A^+ * X_B in R^{d_A x d_B x k}, where X_B holds B's embeddings of the
dictionary words with exactly k B-tokens and X_A the primary model A's embeddings of the
same words, cut or zero-padded to k tokens. The fit is zero-shot (two embedding tables
and a word list), seeded, and cached on disk by (A, B, dictionary, k).

How well a linear map relates the two spaces is measured on words the fit did not see: for
every k a second map is fitted on the first 80% of the words and scored on the remaining
20% by R^2 = 1 - |X_A * T - X_B|^2 / |X_B - mean(X_B)|^2 (pooled over k for the report).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from harness.files import fingerprint
from harness.fuse._tensor import t_least_squares, t_product, t_transpose
from harness.fuse._words import Dictionary, word_token_ids

ADAPTER_VERSION = 2
HELD_OUT_SHARE = 0.2


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
class HeldOut:
    """The squared error of a map fitted without the held-out words, on those words, and
    their total sum of squares around their mean (R^2 = 1 - residual / total)."""

    words: int = 0
    residual: float = 0.0
    total: float = 0.0

    @property
    def r2(self) -> float | None:
        return 1 - self.residual / self.total if self.words and self.total > 0 else None


@dataclass(frozen=True)
class Adapter:
    """T_k for k = 1..K (index k - 1), with the number of words each was fitted on and the
    held-out fit quality of each count."""

    maps: tuple[torch.Tensor, ...]
    words: tuple[int, ...]
    held_out: tuple[HeldOut, ...] = ()

    def held_out_r2(self) -> float | None:
        """R^2 on the held-out words, pooled over every subtoken count."""
        return HeldOut(sum(h.words for h in self.held_out), sum(h.residual for h in self.held_out),
                       sum(h.total for h in self.held_out)).r2

    @property
    def max_subtokens(self) -> int:
        return len(self.maps)

    def to(self, device: torch.device | str) -> "Adapter":
        return Adapter(tuple(t.to(device) for t in self.maps), self.words, self.held_out)

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
    maps, fitted, held_out = [], [], []
    for k in counts or range(1, config.max_subtokens + 1):
        chosen = [i for i, (a, b) in enumerate(zip(ids_a, ids_b)) if len(b) == k and a]
        chosen = chosen[:config.max_words]
        if not chosen:
            maps.append(torch.zeros(table_a.shape[1], table_b.shape[1], k, device=table_a.device))
            held_out.append(HeldOut())
        else:
            x_a = word_tensor(table_a, [ids_a[i] for i in chosen], k)
            x_b = word_tensor(table_b, [ids_b[i] for i in chosen], k)
            maps.append(t_least_squares(x_a, x_b))
            held_out.append(held_out_fit(x_a, x_b))
        fitted.append(len(chosen))
    return Adapter(tuple(maps), tuple(fitted), tuple(held_out))


def held_out_fit(x_a: torch.Tensor, x_b: torch.Tensor) -> HeldOut:
    """A map fitted on the first 80% of the words (n, d, k), scored on the rest (none held
    out below 5 words)."""
    n = x_a.shape[0]
    held = int(n * HELD_OUT_SHARE)
    if held < 1 or n - held < 1:
        return HeldOut()
    t = t_least_squares(x_a[:n - held], x_b[:n - held])
    predicted, target = t_product(x_a[n - held:], t), x_b[n - held:]
    return HeldOut(held, float(((predicted - target) ** 2).sum()),
                   float(((target - target.mean(dim=0)) ** 2).sum()))


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
        for k, t, words, held in zip(missing, fitted.maps, fitted.words, fitted.held_out):
            cached[k] = {"map": t.cpu(), "words": words, "held_out": [held.words, held.residual, held.total]}
            _atomic_save(cached[k], paths[k])
    ordered = [cached[k] for k in sorted(paths)]
    return Adapter(tuple(entry["map"].to(device) for entry in ordered),
                   tuple(int(entry["words"]) for entry in ordered),
                   tuple(HeldOut(int(e["held_out"][0]), float(e["held_out"][1]), float(e["held_out"][2]))
                         for e in ordered))


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, staging)
    os.replace(staging, path)
