"""Many rows continuing one cached prefix, run as a single token tree.

Rows that continue the same prefix (the questions of a few-shot prompt, and each question's
answer options) mostly share their leading tokens too: an option's input is its question
plus at most a few tokens, and a row may be another's prefix outright. Instead of a batch of
right-padded rows, a chunk of rows runs as one sequence holding each distinct (row prefix)
once: a tree of tokens, each node attending to the cached prefix and to its own ancestors
only, at position (prefix length + depth). A causal model's output at a node depends on
nothing else, so every row's logits are its path's, as if it ran alone; no padding is
computed, no prefix cache is copied over a batch, and shared question tokens run once.
With no cached prefix (an empty one), a tree holds whole rows: several short prompts,
each with its options, in one sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class TokenTree:
    """Distinct leading token sequences of some rows: node i holds token `ids[i]` after
    node `parents[i]` (-1: right after the prefix); a parent precedes its children."""

    ids: tuple[int, ...]
    parents: tuple[int, ...]
    depths: tuple[int, ...]
    paths: tuple[tuple[int, ...], ...]  # per row, the node of each of its tokens

    @classmethod
    def of(cls, rows: Sequence[Sequence[int]]) -> "TokenTree":
        ids: list[int] = []
        parents: list[int] = []
        depths: list[int] = []
        children: list[dict[int, int]] = [{}]  # per node + 1 (0: the prefix's end)
        paths = []
        for row in rows:
            parent, path = -1, []
            for token in row:
                node = children[parent + 1].get(token)
                if node is None:
                    node = children[parent + 1][token] = len(ids)
                    ids.append(token)
                    parents.append(parent)
                    depths.append(depths[parent] + 1 if parent >= 0 else 0)
                    children.append({})
                path.append(node)
                parent = node
            paths.append(tuple(path))
        return cls(tuple(ids), tuple(parents), tuple(depths), tuple(paths))

    def __len__(self) -> int:
        return len(self.ids)

    def visible(self, prefix: int, device: torch.device) -> torch.Tensor:
        """Which keys each node attends to: [1, 1, nodes, prefix + nodes], True where the
        key is a prefix position, the node itself or one of its ancestors."""
        nodes = len(self.ids)
        mask = torch.zeros((nodes, prefix + nodes), dtype=torch.bool)
        mask[:, :prefix] = True
        for node, parent in enumerate(self.parents):
            if parent >= 0:
                mask[node, prefix:] = mask[parent, prefix:]
            mask[node, prefix + node] = True
        return mask[None, None].to(device)

    def positions(self, prefix: int, device: torch.device) -> torch.Tensor:
        """Each node's position in its sequences: [1, nodes]."""
        return (torch.tensor(self.depths, device=device) + prefix)[None]


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def chunk_budget(rows: int, longest: int, cap: int) -> int:
    """How many nodes a tree may hold, for a batch size of `rows` rows of at most `longest`
    tokens: no more than those rows would, though always a whole row, and no more than
    `cap`. The attention among a tree's nodes is dense (each node against every node), so
    the cap bounds what it computes in vain: for a tree continuing a cached prefix, the
    prefix's length (the masked part is then never more than half of its attention); for a
    tree of whole rows, the model's width (a node attending to n nodes costs about
    2 x n x width multiply-adds per layer, its linear layers about 12 x width^2 or more, so
    the attention stays under a sixth of them)."""
    return max(longest, min(rows * longest, cap))


def tree_size(rows: Sequence[Sequence[int]]) -> int:
    """How many nodes `TokenTree.of(rows)` holds."""
    ordered = sorted(tuple(row) for row in rows)
    return sum(len(row) - common_length(row, previous)
               for previous, row in zip([()] + ordered, ordered))


def tree_chunks(rows: Sequence[Sequence[int]], budget: int) -> list[list[int]]:
    """Row indices in lexicographic order (rows sharing leading tokens side by side), cut
    into chunks whose trees hold at most `budget` nodes (a longer row runs alone)."""
    order = sorted(range(len(rows)), key=lambda i: tuple(rows[i]))
    chunks: list[list[int]] = []
    nodes, previous = 0, None
    for i in order:
        row = rows[i]
        # in lexicographic order, the most a row shares with any earlier one is with the last
        shared = common_length(row, previous) if previous is not None else 0
        if chunks and nodes + len(row) - shared <= budget:
            chunks[-1].append(i)
            nodes += len(row) - shared
        else:
            chunks.append([i])
            nodes = len(row)
        previous = row
    return chunks
