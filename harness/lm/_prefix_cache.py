"""Shared-prefix KV caching: a prompt prefix that many requests share runs through a model
once, and every request continues from its key/value cache.

Few-shot prompts are mostly one shared prefix (MMLU's instruction and five dev examples
precede every question of a subject; GSM8K's and FLORES's demonstrations likewise), and a
pack runs each of its K models over it. Sharing is decided on token ids, after each request
was tokenised exactly as it is without sharing (lm-eval's context/continuation split, so a
BPE merge across that boundary is kept): requests are grouped by their longest common
leading ids (`shared_prefix_groups`) and the group's prefix is run once with
`use_cache=True`. Log-likelihood rows then continue it as token trees (`_token_tree`: one
sequence per chunk holding each distinct leading run of the rows once, on a batch-of-one
view of the prefix's cache, computing only the scored positions' logits); generation
batches continue it on a fresh `DynamicCache` whose tensors are views of the prefix's,
expanded over the batch, the rows' own tokens laid out after padding. Updates concatenate,
so no row can change the prefix or another row's cache.

A cache pays when its prefix would otherwise run more than once. A group whose rows fit
in one tree (a zero-shot question and its few short options) gains nothing from it but
costs a forward of its own: such groups run whole, several to a tree with no cache
(`tree_runs`), so short prompts take fewer forwards than HFLM's padded batches, not more.

A model whose outputs a cached prefix would change (a wrapper that reads the whole input
or drops a custom attention mask, prompt tuning's virtual tokens, no cache support) is
detected once per model by a probe that compares one request's log-likelihoods with and
without sharing, every way; it then runs uncached. `--prefix-cache false` turns sharing
off altogether (to compare, or to rule it out while debugging); results agree within float
tolerance either way, so it is not part of a cell's fingerprint (as the batch size is not).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from lm_eval.models.huggingface import HFLM

from harness.lm._batching import AUTO_BATCH_START
from harness.lm._token_tree import (TokenTree, chunk_budget, common_length, tree_chunks,
                                    tree_size)
from harness.models.cost import PROMPT_PREFIX

log = logging.getLogger(__name__)

# A shorter shared prefix saves less than the extra forward call and the smaller batches cost.
MIN_SHARED_TOKENS = 16
KEPT_PREFIXES = 4  # prefixes kept per model (a run moves on from one few-shot prefix to the next)
MAX_NESTING = 64  # bounds the recursion of `shared_prefix_groups` on pathological inputs
# The probe's tolerance on a log-likelihood: what float32 reordering of the same sums moves it
# by, with room; half precision moves it by far more.
PROBE_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4}
HALF_PROBE_TOLERANCE = 5e-2


@dataclass(frozen=True)
class PrefixGroup:
    """Sequences (by index) whose first `length` token ids are the same."""

    length: int
    members: tuple[int, ...]


def shared_prefix_groups(sequences: Sequence[Sequence[int]],
                         min_shared: int = MIN_SHARED_TOKENS) -> list[PrefixGroup]:
    """Disjoint groups of at least two sequences sharing at least `min_shared` leading ids,
    chosen to save the most recomputed tokens ((size - 1) x shared length per group).
    Sequences in no group share too little with any other to be worth it."""
    order = sorted(range(len(sequences)), key=lambda i: tuple(sequences[i]))
    neighbours = [common_length(sequences[a], sequences[b]) for a, b in zip(order, order[1:])]
    if len(order) < 2:
        return []
    return _best_grouping(order, neighbours, 0, len(order), min_shared, 0)[1]


def _best_grouping(order: list[int], neighbours: list[int], lo: int, hi: int, min_shared: int,
                   depth: int) -> tuple[int, list[PrefixGroup]]:
    """(tokens saved, groups) for the sorted run order[lo:hi]: one group over the run's
    common prefix, or the best grouping of each sub-run split where that prefix ends."""
    shared = min(neighbours[lo:hi - 1])
    whole = (hi - lo - 1) * shared if shared >= min_shared else 0
    saved, groups = 0, list[PrefixGroup]()
    if depth < MAX_NESTING:
        start = lo
        for i in range(lo, hi):
            if i == hi - 1 or neighbours[i] == shared:
                if i + 1 - start >= 2:
                    part_saved, part = _best_grouping(order, neighbours, start, i + 1,
                                                      min_shared, depth + 1)
                    saved, groups = saved + part_saved, groups + part
                start = i + 1
    if whole and whole >= saved:
        return whole, [PrefixGroup(shared, tuple(order[lo:hi]))]
    return saved, groups


@dataclass(frozen=True)
class TreeRun:
    """Rows (by index) that one forward scores as a token tree: continuing the `shared`
    ids they start with from that prefix's cache, or (`shared` 0) whole."""

    shared: int
    rows: tuple[int, ...]


def tree_runs(inputs: Sequence[Sequence[int]], groups: Sequence[PrefixGroup], batch: int,
              width: int) -> list[TreeRun]:
    """The forwards scoring `groups`' rows (`inputs`: the ids each row runs) for a batch
    size of `batch` rows and a model `width` wide. A group's prefix is cached when its
    rows fill more than one tree of whole rows (`chunk_budget`, capped by the width): the
    prefix then runs once instead of once per tree. A smaller group (a zero-shot question
    and its options) runs whole, in trees shared with other such groups: its prefix runs
    once either way, and continuing a cache would cost a forward of its own."""
    runs: list[TreeRun] = []
    whole: list[int] = []
    for group in groups:
        rows = [inputs[i] for i in group.members]
        if tree_size(rows) <= chunk_budget(batch, max(len(row) for row in rows), width):
            whole += group.members
            continue
        own = [row[group.length:] for row in rows]
        budget = chunk_budget(batch, max(len(row) for row in own), group.length)
        runs += [TreeRun(group.length, tuple(group.members[i] for i in chunk))
                 for chunk in tree_chunks(own, budget)]
    if whole:
        rows = [inputs[i] for i in whole]
        budget = chunk_budget(batch, max(len(row) for row in rows), width)
        runs += [TreeRun(0, tuple(whole[i] for i in chunk)) for chunk in tree_chunks(rows, budget)]
    return runs


def expanded_cache(cache: Any, rows: int, config: Any) -> Any:
    """A fresh `DynamicCache` holding `cache`'s tensors as views expanded over `rows`."""
    from transformers import DynamicCache

    layers = [(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1))
              for layer in cache.layers]
    copy = DynamicCache(layers, config=config)
    setattr(copy, PROMPT_PREFIX, copy.get_seq_length())  # the next call continues the prompt
    return copy


class PrefixCache:
    """One model's cached prefixes (the latest `KEPT_PREFIXES`), and whether continuing from
    them reproduces its uncached log-likelihoods (probed once)."""

    def __init__(self, model: Any, enabled: bool = True, keep_logits: bool = False) -> None:
        self.model = model
        self.enabled = enabled
        self.keep_logits = keep_logits
        self._probed = False
        self._kept: OrderedDict[tuple[int, ...], tuple[Any, torch.Tensor | None]] = OrderedDict()

    @functools.cached_property
    def _keeps_logits(self) -> bool:
        """Whether the model computes the logits of chosen positions only when asked
        (transformers' causal LMs take `logits_to_keep`)."""
        return "logits_to_keep" in inspect.signature(self.model.forward).parameters

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def width(self) -> int:
        """The model's hidden size (0 where its config names none): what caps a tree of
        whole rows (`chunk_budget`)."""
        return int(getattr(self.model.config, "hidden_size", 0) or 0)

    def usable(self, sample: Sequence[int], shared: int) -> bool:
        """Whether this model may continue from cached prefixes; the first call checks it
        on `sample` split after `shared` tokens."""
        if self.enabled and not self._probed:
            self._probed = True
            self.enabled = self._agrees(list(sample), shared)
        return self.enabled

    @torch.no_grad()
    def _agrees(self, sample: list[int], shared: int) -> bool:
        """Whether `sample`'s own tokens after its first `shared` get the log-likelihoods of
        the whole sample run uncached, every way a prefix is shared: as a token tree
        continuing its cache and as a tree of whole rows holding it (scoring; each with a
        sibling branch placed first, so a model ignoring the tree's mask sees it), and as an
        expanded batch of two continuing its cache (generation)."""
        own = sample[shared:]
        sibling = own[:-1] + [own[-1] - 1 if own[-1] > 0 else own[-1] + 1]
        ids = torch.tensor([sample], device=self.device)
        try:
            reference = self.model(input_ids=ids).logits[0, shared:].float().log_softmax(-1)
            tree = TokenTree.of([sibling, own])
            in_tree = self.tree_logits(sample[:shared], tree)[list(tree.paths[1])]
            whole = TokenTree.of([sample[:shared] + sibling, sample])
            in_whole = self.tree_logits([], whole)[list(whole.paths[1][shared:])]
            cache, _ = self.prefix(sample[:shared])
            batched = self.model(input_ids=ids[:, shared:].expand(2, -1), use_cache=True,
                                 cache=expanded_cache(cache, 2, self.model.config)).logits
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # any failure means: this model cannot continue a cache
            log.warning("prefix cache off for %s: %s", type(self.model).__name__, exc)
            return False
        tolerance = PROBE_TOLERANCE.get(self.model.dtype, HALF_PROBE_TOLERANCE)
        for cached in (in_tree[None], in_whole[None], batched):
            cached = cached.float().log_softmax(-1)
            if cached.shape[1:] != reference.shape or (cached - reference).abs().max() > tolerance:
                log.warning("prefix cache off for %s: a cached prefix changes its "
                            "log-likelihoods", type(self.model).__name__)
                return False
        return True

    @torch.no_grad()
    def prefix(self, ids: Sequence[int]) -> tuple[Any, torch.Tensor | None]:
        """The prefix's cache (and, with `keep_logits`, its logits [1, len, V])."""
        key = tuple(ids)
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        # without `keep_logits` no prefix position is scored: one logit row instead of the
        # output layer over the whole prefix (most of a small model's work on a long prefix)
        keep = {} if self.keep_logits or not self._keeps_logits else {"logits_to_keep": 1}
        out = self.model(input_ids=torch.tensor([key], device=self.device), use_cache=True,
                         **keep)
        entry = (out.cache, out.logits if self.keep_logits else None)
        self._kept[key] = entry
        while len(self._kept) > KEPT_PREFIXES:
            self._kept.popitem(last=False)
        return entry

    @torch.no_grad()
    def tree_logits(self, prefix: Sequence[int], tree: TokenTree,
                    nodes: Sequence[int] | None = None, visible: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Logits of `tree`'s nodes continuing `prefix` from its cache (an empty prefix: no
        cache): [nodes, V], or of only the `nodes` listed (the model computes no others
        where it can). `visible` is the tree's mask after `prefix` where the caller has it
        already (`TokenTree.visible`)."""
        cache = expanded_cache(self.prefix(prefix)[0], 1, self.model.config) if prefix else None
        visible = (tree.visible(len(prefix), self.device) if visible is None
                   else visible.to(self.device))
        if getattr(self.model.config, "_attn_implementation", None) == "eager":
            blocked = torch.finfo(self.model.dtype).min  # eager attention adds its mask
            visible = torch.zeros(visible.shape, dtype=self.model.dtype,
                                  device=self.device).masked_fill(~visible, blocked)
        keep: dict[str, Any] = {}
        if nodes is not None and self._keeps_logits:
            keep["logits_to_keep"] = torch.tensor(nodes, device=self.device)
        logits = self.model(input_ids=torch.tensor([tree.ids], device=self.device),
                            attention_mask=visible, position_ids=tree.positions(len(prefix),
                                                                                self.device),
                            use_cache=cache is not None, cache=cache, **keep).logits[0]
        return logits if nodes is None or keep else logits[list(nodes)]

    def generation_inputs(self, rows: Sequence[Sequence[int]], width: int, pad: int, shared: int
                          ) -> tuple[torch.Tensor, torch.Tensor, Any] | None:
        """For batched generation of `rows` whose first `shared` ids are the same: (ids,
        attention mask, cache) laying each row out as the shared prefix, padding, then the
        row's own tokens (positions come from the mask, so they continue the prefix), or None
        when that is not worth it or the model cannot continue a cache."""
        if shared < MIN_SHARED_TOKENS or not self.usable(rows[0], shared):
            return None
        ids = torch.full((len(rows), width), pad, dtype=torch.long, device=self.device)
        mask = torch.zeros_like(ids)
        for r, row in enumerate(rows):
            ids[r, :shared] = torch.tensor(row[:shared])
            ids[r, width - len(row) + shared:] = torch.tensor(row[shared:])
            mask[r, :shared] = 1
            mask[r, width - len(row) + shared:] = 1
        cache, _ = self.prefix(rows[0][:shared])
        return ids, mask, expanded_cache(cache, len(rows), self.model.config)


def shared_prompts(prompts: dict[Any, list[list[int]]]) -> dict[Any, list[tuple[int, ...]]]:
    """Per key, the prefixes its prompts share (`shared_prefix_groups`), longest first: what
    a generation batch of those prompts may continue from a cache."""
    return {key: sorted({tuple(rows[g.members[0]][:g.length]) for g in shared_prefix_groups(rows)},
                        key=len, reverse=True)
            for key, rows in prompts.items()}


def generation_prefix(rows: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]) -> int:
    """How many leading ids a generation batch may take from a cache: the longest candidate
    (a prefix the run's prompts share) that every row starts with, else what the rows share;
    always leaving each row a token of its own to run."""
    limit = min(len(row) for row in rows) - 1
    for candidate in candidates:
        if len(candidate) <= limit and all(common_length(row, candidate) == len(candidate)
                                           for row in rows):
            return len(candidate)
    if len(rows) < 2:
        return 0
    return min(limit, min(common_length(rows[0], row) for row in rows[1:]))


class PrefixCachedHFLM(HFLM):
    """lm-eval's HFLM, continuing shared prompt prefixes from their cache for
    log-likelihoods and generation (causal models; anything else as HFLM does it)."""

    def __init__(self, *args: Any, prefix_cache: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prefixes = PrefixCache(self.model, enabled=prefix_cache and self.backend == "causal")
        self._shared_prompts: list[tuple[int, ...]] = []

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """HFLM's, after finding the prefixes its prompts share (longest first): a batch,
        however small, then continues the longest of them that all its rows start with."""
        if self.prefixes.enabled:
            prompts = [self.tok_encode(request.args[0]) for request in requests]
            self._shared_prompts = shared_prompts({None: prompts})[None]
        return super().generate_until(requests, disable_tqdm)

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, override_bs: int | None = None
                              ) -> list[tuple[float, bool]]:
        # each request's input exactly as HFLM builds it; only the context part may be cached
        inputs = [(context + continuation)[-(self.max_length + 1):][:-1]
                  for _, context, continuation in requests]
        cacheable = [i[:len(i) - len(r[2])] for i, r in zip(inputs, requests)]
        groups = shared_prefix_groups(cacheable) if self.prefixes.enabled else []
        if groups:
            first = groups[0].members[0]
            with self._autocast():
                if not self.prefixes.usable(inputs[first], groups[0].length):
                    groups = []
        results: list[Any] = [None] * len(requests)
        if groups:
            self._score_trees(groups, requests, inputs, results)
        rest = [i for i, result in enumerate(results) if result is None]
        if rest:
            answers = super()._loglikelihood_tokens([requests[i] for i in rest], disable_tqdm,
                                                    override_bs)
            for i, answer in zip(rest, answers):
                results[i] = answer
        return results

    def _autocast(self) -> Any:
        return torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                              enabled=self.mixed_precision_dtype is not None)

    def _score_trees(self, groups: list[PrefixGroup], requests: list[Any],
                     inputs: list[list[int]], results: list[Any]) -> None:
        """Every request of `groups`, as token trees (`tree_runs`); an out-of-memory error
        under an "auto" batch size halves it for the runs left."""
        rows = self.batch_size if isinstance(self.batch_size, int) else AUTO_BATCH_START
        runs = deque(tree_runs(inputs, groups, rows, self.prefixes.width))
        while runs:
            try:
                self._score_run(runs[0], requests, inputs, results)
            except torch.OutOfMemoryError:
                if isinstance(self.batch_size, int) or rows == 1:
                    raise
                rows //= 2
                left = [PrefixGroup(group.length, members) for group in groups
                        if (members := tuple(i for i in group.members if results[i] is None))]
                runs = deque(tree_runs(inputs, left, rows, self.prefixes.width))
                continue
            runs.popleft()

    def _score_run(self, run: TreeRun, requests: list[Any], inputs: list[list[int]],
                   results: list[Any]) -> None:
        """The requests of `run`, as one token tree computing only the logits that predict
        their continuations."""
        tree = TokenTree.of([inputs[i][run.shared:] for i in run.rows])
        scored = {i: path[-len(requests[i][2]):] for i, path in zip(run.rows, tree.paths)}
        nodes = sorted({node for path in scored.values() for node in path})
        with self._autocast():
            logits = self.prefixes.tree_logits(inputs[run.rows[0]][:run.shared], tree, nodes)
        scores = torch.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
        row_of = {node: row for row, node in enumerate(nodes)}
        for i, path in scored.items():
            results[i] = self._answer(requests[i], scores[[row_of[n] for n in path]])

    def _answer(self, request: Any, scores: torch.Tensor) -> tuple[float, bool]:
        """(log-likelihood, greedy) of a request's continuation, scored by `scores` (one
        row per continuation token); recorded in lm-eval's response cache."""
        request_str, _, continuation = request
        wanted = torch.tensor(continuation, dtype=torch.long, device=self.device)
        answer = (float(scores.gather(-1, wanted[:, None]).sum()),
                  bool((scores.argmax(-1) == wanted).all()))
        if request_str is not None:  # loglikelihood_rolling records whole documents itself
            self.cache_hook.add_partial("loglikelihood", request_str, answer)
        return answer

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str],
                        **generation_kwargs: Any) -> torch.Tensor:
        mask = generation_kwargs.get("attention_mask")
        if self.prefixes.enabled and mask is not None:
            rows = [row[keep.bool()].tolist() for row, keep in zip(context, mask)]
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            shared = generation_prefix(rows, self._shared_prompts)
            with self._autocast():
                laid_out = self.prefixes.generation_inputs(rows, context.shape[1], pad, shared)
            if laid_out is not None:
                context, generation_kwargs["attention_mask"], generation_kwargs["cache"] = laid_out
        return super()._model_generate(context, max_length, stop, **generation_kwargs)
