"""Crossing from the primary model A's tokens into a secondary model B's input embeddings.

Forward (exact, discrete): A's token ids are decoded to text, B tokenises that text, and
B's embedding table gives its inputs. Backward (FUSE): the gradient B's loss leaves on its
input embeddings is carried back to A's embeddings word by word through the adapter's
transpose, as a `torch.autograd.Function`.

Two backward rules:

- "correct" (default): the adjoint of x_B = x_A * T_k. Each word's B-side gradient (its
  k B-token rows, k = the word's B-token count, the count the adapter was fitted by) is
  multiplied by the t-transpose T_k^T and lands on the word's own A tokens (slot j on the
  word's j-th A token; A tokens past k were cut in the fit and get none). Words longer than
  the adapter's K tokens, or absent on one side, pass no gradient.
- "official": the released code's `Translate_Fn.backward`. For each A word of s_A tokens
  it takes the *first* s_A rows of B's gradient (the split remainder is never used, so every
  word reads from the start), maps them with T indexed by the A-token count although the
  adapter is fitted by B-token count, transposes slice by slice without reversing the slice
  order (not an adjoint for k >= 3), draws a random N(0, 1) map for words longer than K,
  and concatenates the pieces cut to A's length.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F

from harness.fuse._adapter import Adapter, AdapterConfig, load_or_fit_adapter
from harness.fuse._tensor import slice_transpose, t_product
from harness.fuse._words import decoded_spans, read_dictionary, token_words, tokenize_spans

Adjoint = Literal["correct", "official"]
ADJOINTS = ("correct", "official")


@dataclass(frozen=True)
class Alignment:
    """One text seen by both models: B's tokens and every token's word on either side."""

    ids_b: tuple[int, ...]
    words_a: tuple[int, ...]
    words_b: tuple[int, ...]


class Bridge:
    """A -> B: exact retokenisation forward, adapter backward.

    `adapter=None` means no adapter is needed: A and B are the same model (B's inputs are
    A's embeddings themselves and the gradient passes unchanged), or, with
    `shared_vocabulary`, B reads A's token ids through its own table (exact backprop to A's
    one-hot tokens: the ceiling FUSE is measured against).
    """

    def __init__(self, tokenizer_a: Any, tokenizer_b: Any, embeddings_b: torch.Tensor,
                 adapter: Adapter | None, adjoint: Adjoint = "correct", seed: int = 0,
                 shared_vocabulary: bool = False) -> None:
        if adjoint not in ADJOINTS:
            raise ValueError(f"adjoint must be one of {ADJOINTS}, got {adjoint!r}")
        if shared_vocabulary and adapter is not None:
            raise ValueError("a shared vocabulary needs no adapter")
        self.tokenizer_a, self.tokenizer_b = tokenizer_a, tokenizer_b
        self.embeddings_b = embeddings_b
        self.adapter, self.adjoint = adapter, adjoint
        self.shared_vocabulary = shared_vocabulary
        self.transposed = adapter.transposed() if adapter is not None else ()
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def identity(self) -> bool:
        """A and B are the same model."""
        return self.adapter is None and not self.shared_vocabulary

    @property
    def exact(self) -> bool:
        """B reads A's token ids: no retokenisation, no adapter."""
        return self.adapter is None

    def ids_b(self, ids_a: Sequence[Sequence[int]]) -> list[list[int]]:
        """B's token ids for each row of A's ids (the exact forward, nothing for backward)."""
        if self.exact:
            return [list(row) for row in ids_a]
        texts = self.tokenizer_a.batch_decode([list(row) for row in ids_a])
        return [list(ids) for ids in self.tokenizer_b(texts, add_special_tokens=False)["input_ids"]]

    def align(self, ids_a: Sequence[Sequence[int]]) -> list[Alignment]:
        alignments = []
        for row in ids_a:
            text, spans_a = decoded_spans(self.tokenizer_a, row)
            ids_b, spans_b = tokenize_spans(self.tokenizer_b, text)
            alignments.append(Alignment(tuple(ids_b), tuple(token_words(spans_a, text)),
                                        tuple(token_words(spans_b, text))))
        return alignments

    def embed(self, x_a: torch.Tensor, ids_a: Sequence[Sequence[int]]
              ) -> tuple[torch.Tensor, list[list[int]]]:
        """(B's input embeddings (b, L_B, d_B) right-padded with zero rows, B's token ids)
        for A's embeddings `x_a` (b, L_A, d_A) of the tokens `ids_a`; differentiable in x_a."""
        if self.shared_vocabulary:
            raise ValueError("a shared-vocabulary bridge embeds one-hot tokens (embed_one_hot)")
        if self.identity:
            return x_a, [list(row) for row in ids_a]
        alignments = self.align(ids_a)
        return FuseTranslate.apply(x_a, self, alignments), [list(a.ids_b) for a in alignments]

    def embed_one_hot(self, one_hot: torch.Tensor, embeddings_a: torch.Tensor,
                      ids_a: Sequence[Sequence[int]]) -> tuple[torch.Tensor, list[list[int]]]:
        """`embed` for A's tokens given as one-hot rows (b, L, V_A) and A's table: with a
        shared vocabulary B's own table embeds them, differentiable in the one-hot rows."""
        if self.shared_vocabulary:
            table = self.embeddings_b[:one_hot.shape[-1]].detach().to(one_hot.device, one_hot.dtype)
            return one_hot @ table, [list(row) for row in ids_a]
        return self.embed(one_hot @ embeddings_a, ids_a)

    def forward_embeddings(self, alignments: Sequence[Alignment]) -> torch.Tensor:
        """B's embeddings of every alignment's B tokens, right-padded with zero rows."""
        width = max([len(a.ids_b) for a in alignments] + [1])
        table = self.embeddings_b
        x_b = torch.zeros(len(alignments), width, table.shape[1], dtype=table.dtype, device=table.device)
        for row, alignment in enumerate(alignments):
            if alignment.ids_b:
                x_b[row, :len(alignment.ids_b)] = table[list(alignment.ids_b)]
        return x_b

    def backward(self, grad_b: torch.Tensor, alignments: Sequence[Alignment],
                 shape_a: torch.Size) -> torch.Tensor:
        grad_b = grad_b.to(torch.promote_types(grad_b.dtype, torch.float32))
        if self.adjoint == "official":
            return self._released_backward(grad_b, alignments, shape_a)
        return self._adjoint_backward(grad_b, alignments, shape_a)

    def _adjoint_backward(self, grad_b: torch.Tensor, alignments: Sequence[Alignment],
                          shape_a: torch.Size) -> torch.Tensor:
        grad_a = torch.zeros(shape_a, dtype=grad_b.dtype, device=grad_b.device)
        by_count: dict[int, list[tuple[int, list[int], list[int]]]] = defaultdict(list)
        for row, alignment in enumerate(alignments):
            positions_a, positions_b = _positions(alignment.words_a), _positions(alignment.words_b)
            for word, rows_b in positions_b.items():
                k = len(rows_b)
                if k <= len(self.transposed) and positions_a.get(word):
                    by_count[k].append((row, positions_a[word][:k], rows_b))
        for k, words in by_count.items():
            g = torch.stack([grad_b[row, rows_b] for row, _, rows_b in words])  # (n, k, d_B)
            mapped = t_product(g.transpose(1, 2), self.transposed[k - 1].to(g))  # (n, d_A, k)
            for (row, rows_a, _), tube in zip(words, mapped):
                grad_a[row, rows_a] += tube[:, :len(rows_a)].T
        return grad_a

    def _released_backward(self, grad_b: torch.Tensor, alignments: Sequence[Alignment],
                           shape_a: torch.Size) -> torch.Tensor:
        assert self.adapter is not None
        maps, (d_a, d_b) = self.adapter.maps, self.adapter.maps[0].shape[:2]
        grad_a = torch.zeros(shape_a, dtype=grad_b.dtype, device=grad_b.device)
        for row, alignment in enumerate(alignments):
            g = grad_b[row, :len(alignment.ids_b)]
            pieces = []
            for _, tokens in groupby(alignment.words_a):
                s_a = len(list(tokens))
                word_grad = g[:s_a]  # the released loop never advances past the first word
                if s_a > len(maps):
                    chain = torch.randn(d_a, d_b, s_a, generator=self.generator).to(g)
                else:
                    chain = maps[s_a - 1].to(g)  # indexed by A's count, fitted by B's
                pieces.append(released_t_product(word_grad.T[None], slice_transpose(chain))[0])
            length = min(shape_a[1], sum(p.shape[-1] for p in pieces))
            grad_a[row, :length] = torch.cat(pieces, dim=-1)[:, :length].T
        return grad_a


@dataclass(frozen=True)
class Side:
    """One model as a bridge sees it: its identity (what the adapter cache is keyed by), its
    tokenizer and its input embedding table."""

    identity: Any
    tokenizer: Any
    embeddings: torch.Tensor


def connect(a: Side, b: Side, config: AdapterConfig, dictionary: str, adjoint: Adjoint, seed: int,
            cache_root: Path) -> tuple[Bridge, dict[str, Any]]:
    """The bridge from model A to model B (identity when both are the same model: same
    weights, tokenizer, dtype and device) and a report of its adapter."""
    if a.identity == b.identity:
        return Bridge(a.tokenizer, b.tokenizer, b.embeddings, None, adjoint, seed), {"identity": True}
    if shares_vocabulary(a.tokenizer, b.tokenizer):
        return (Bridge(a.tokenizer, b.tokenizer, b.embeddings, None, adjoint, seed, shared_vocabulary=True),
                {"shared_vocabulary": True})
    words = read_dictionary(dictionary, seed)
    started = time.perf_counter()
    adapter = load_or_fit_adapter(a.identity, b.identity, a.embeddings, b.embeddings,
                                  a.tokenizer, b.tokenizer, words, config, cache_root)
    report = {"dictionary": words.source, "dictionary_words": len(words.words),
              "dictionary_sha256": words.digest, "words_per_subtoken_count": list(adapter.words),
              "held_out_r2": _rounded(adapter.held_out_r2()),
              "held_out_r2_per_subtoken_count": [_rounded(h.r2) for h in adapter.held_out],
              "held_out_words": sum(h.words for h in adapter.held_out),
              "adapter_seconds": round(time.perf_counter() - started, 3)}
    return Bridge(a.tokenizer, b.tokenizer, b.embeddings, adapter, adjoint, seed), report


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def shares_vocabulary(tokenizer_a: Any, tokenizer_b: Any) -> bool:
    """B's vocabulary holds every token of A's under the same id (B may add tokens after)."""
    vocabulary_b = tokenizer_b.get_vocab()
    return all(vocabulary_b.get(token) == index for token, index in tokenizer_a.get_vocab().items())


def splice(base: torch.Tensor, x: torch.Tensor, start: int, mask: torch.Tensor) -> torch.Tensor:
    """`base` (N, W, d) with the rows of `x` (N, L, d) written from position `start` on,
    where `mask` (N, W) holds (differentiable in x)."""
    width = base.shape[1]
    placed = F.pad(x[:, :max(0, width - start)], (0, 0, start, 0))
    placed = F.pad(placed, (0, 0, 0, width - placed.shape[1]))
    return torch.where(mask[..., None], placed.to(base.dtype), base)


def _positions(words: Sequence[int]) -> dict[int, list[int]]:
    """word -> the token positions belonging to it (tokens before any word are left out)."""
    positions: dict[int, list[int]] = defaultdict(list)
    for position, word in enumerate(words):
        if word >= 0:
            positions[word].append(position)
    return positions


def released_t_product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The released `t_prod_fast` for a depth k_x <= k_y (a word with fewer B rows than its
    map has slices): output slice r = sum_{a < k_x} X_a Y_{(r - a + k_x - k_y) mod k_y}, the
    t-product when k_x = k_y."""
    k_x, k_y = x.shape[-1], y.shape[-1]
    out = x.new_zeros(*x.shape[:-2], y.shape[-2], k_y)
    for r in range(k_y):
        for a in range(k_x):
            out[..., r] += x[..., a] @ y[..., (r - a + k_x - k_y) % k_y]
    return out


class FuseTranslate(torch.autograd.Function):
    """x_A -> x_B: the exact discrete forward of a `Bridge`, its adapter in backward."""

    @staticmethod
    def forward(ctx: Any, x_a: torch.Tensor, bridge: Bridge,
                alignments: list[Alignment]) -> torch.Tensor:
        ctx.bridge, ctx.alignments, ctx.shape_a, ctx.dtype_a = bridge, alignments, x_a.shape, x_a.dtype
        return bridge.forward_embeddings(alignments)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_b: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad_a = ctx.bridge.backward(grad_b, ctx.alignments, ctx.shape_a)
        return grad_a.to(ctx.dtype_a), None, None
