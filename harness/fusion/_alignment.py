"""MinED vocabulary alignment between the tokenizers of a model pack.

PackLLM fuses logits in one *reference* vocabulary. For each reference token string t the
map m: V_R -> V_E picks an expert token (paper section 3.4, official `find_best_mapping`):

1. t itself, when the expert has it;
2. else, when t starts with the reference's word-start marker ("▁" for SentencePiece/
   Metaspace, "Ġ" for byte-level BPE) and is not a doubled marker, t with that marker
   swapped for the expert's marker, when the expert has that;
3. else the expert token at minimum Levenshtein distance from the (marker-swapped) string,
   ties going to the lowest expert id.

Departures from the released code, each a fix of a bug listed in the research notes: the
marker is read from each vocabulary rather than from a class-name table (which gave Gemma
the wrong one); the map is an array indexed by reference id, not the insertion order of a
dict; special tokens with a role (EOS, BOS, PAD, UNK) map to the expert's token of the
same role, so a reference EOS stays an EOS for every expert. One id often holds several
roles (GPT-2 and GPT-NeoX use `<|endoftext|>` as EOS, BOS and UNK; many setups pad with
EOS): it takes the first role in that order that the expert also has, so EOS wins.
The quadratic edit-distance search runs in rapidfuzz's C++ kernels and is pruned by
length: |len(a) - len(b)| is a lower bound of the distance, so candidates are compared in
widening length windows and a query is settled once its best distance fits inside the
window.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

MARKERS = ("▁", "Ġ")
# Priority order: an id holding several roles maps by the first the expert also has.
SPECIAL_ROLES = ("eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id")
ALGORITHM_VERSION = 2
HOW = ("special", "exact", "marker", "edit-distance")


@dataclass(frozen=True)
class VocabularyMap:
    """`index[r]` is the expert id for reference id r; `counts` says how many came from each rule."""

    index: np.ndarray
    counts: dict[str, int]


def vocabulary(tokenizer: Any) -> list[str]:
    """Token strings indexed by id (ids without a token, e.g. gaps, give "")."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [t if isinstance(t, str) else "" for t in tokens]


def space_marker(tokens: Sequence[str]) -> str | None:
    """The word-start marker this vocabulary uses most, or None when it uses neither."""
    counts = {m: sum(t.startswith(m) for t in tokens) for m in MARKERS}
    marker = max(MARKERS, key=lambda m: counts[m])
    return marker if counts[marker] else None


def special_ids(tokenizer: Any) -> dict[str, int]:
    return {role: getattr(tokenizer, role) for role in SPECIAL_ROLES
            if getattr(tokenizer, role, None) is not None}


def swap_marker(token: str, source: str | None, target: str | None) -> str:
    """`token` with its leading `source` marker replaced by `target` (not for doubled markers)."""
    if source is None or target is None or not token.startswith(source):
        return token
    if len(token) > 1 and token[1] == source:
        return token
    return target + token[len(source):]


def nearest_tokens(queries: Sequence[str], choices: Sequence[str]) -> np.ndarray:
    """For each query, the index of the first choice at minimum Levenshtein distance."""
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    lengths = np.fromiter((len(c) for c in choices), dtype=np.int64, count=len(choices))
    result = np.empty(len(queries), dtype=np.int64)
    by_length: dict[int, list[int]] = defaultdict(list)
    for position, query in enumerate(queries):
        by_length[len(query)].append(position)
    for length, members in by_length.items():
        gap = np.abs(lengths - length)
        widest = int(gap.max())
        pending = np.asarray(members)
        window = 1
        while pending.size:
            candidates = np.flatnonzero(gap <= window)  # ascending ids keep the tie rule
            if candidates.size:
                distances = process.cdist([queries[int(q)] for q in pending],
                                          [choices[int(c)] for c in candidates],
                                          scorer=Levenshtein.distance, dtype=np.int32,
                                          workers=-1,
                                          score_cutoff=None if window >= widest else window)
                best = distances.argmin(axis=1)
                best_distance = distances[np.arange(len(pending)), best]
                # outside the window every distance exceeds `window`, so a best within it is global
                settled = (best_distance <= window) | (window >= widest)
                result[pending[settled]] = candidates[best[settled]]
                pending = pending[~settled]
            window *= 2
    return result


def build_map(reference: Sequence[str], expert: Sequence[str],
              reference_specials: dict[str, int] | None = None,
              expert_specials: dict[str, int] | None = None) -> VocabularyMap:
    """The MinED map from the `reference` vocabulary into the `expert` one (both id-indexed)."""
    reference_specials = reference_specials or {}
    expert_specials = expert_specials or {}
    source, target = space_marker(reference), space_marker(expert)
    expert_ids: dict[str, int] = {}
    for token_id, token in enumerate(expert):
        if token:
            expert_ids.setdefault(token, token_id)
    index = np.full(len(reference), -1, dtype=np.int64)
    counts = dict.fromkeys(HOW, 0)
    for role in SPECIAL_ROLES:  # priority order: the first role claiming an id keeps it
        claimed = reference_specials.get(role)
        if claimed is None or role not in expert_specials or not 0 <= claimed < len(reference):
            continue
        if index[claimed] < 0:
            index[claimed] = expert_specials[role]
    counts["special"] = int((index >= 0).sum())
    unmatched: list[int] = []
    queries: list[str] = []
    for token_id, token in enumerate(reference):
        if index[token_id] >= 0:
            continue
        if token in expert_ids:
            index[token_id] = expert_ids[token]
            counts["exact"] += 1
            continue
        swapped = swap_marker(token, source, target)
        if swapped in expert_ids:
            index[token_id] = expert_ids[swapped]
            counts["marker"] += 1
            continue
        unmatched.append(token_id)
        queries.append(swapped)
    if unmatched:
        index[np.asarray(unmatched)] = nearest_tokens(queries, expert)
    counts["edit-distance"] = len(unmatched)
    return VocabularyMap(index, counts)


def map_key(reference: Any, expert: Any) -> str:
    payload = json.dumps([ALGORITHM_VERSION, vocabulary(reference), special_ids(reference),
                          vocabulary(expert), special_ids(expert)], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def default_cache_dir() -> Path:
    from harness.settings import cache_root

    return cache_root() / "fusion" / "vocabulary-maps"


_MEMORY: dict[str, VocabularyMap] = {}


def cached_map(reference: Any, expert: Any, cache_dir: Path | None = None) -> VocabularyMap:
    """The MinED map between two tokenizers, built once and kept on disk by content hash."""
    key = map_key(reference, expert)
    if key in _MEMORY:
        return _MEMORY[key]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{key}.npz"
    if path.exists():
        with np.load(path) as stored:
            mapping = VocabularyMap(stored["index"], dict(zip(HOW, map(int, stored["counts"]))))
    else:
        mapping = build_map(vocabulary(reference), vocabulary(expert), special_ids(reference),
                            special_ids(expert))
        folder.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(dir=folder, suffix=".npz")
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, index=mapping.index,
                     counts=np.array([mapping.counts[h] for h in HOW]))
        os.replace(staging, path)  # concurrent builders write identical content
    _MEMORY[key] = mapping
    return mapping
