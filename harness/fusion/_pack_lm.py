"""An lm-eval `LM` over a pack of causal LMs whose next-token logits are fused per example.

Per request: pick the reference tokenizer (`PackOptions.reference`, on the text that
`reference_on` names), tokenize in it, translate the ids id-by-id into every member's
vocabulary (MinED maps, identity within a tokenizer family), run each member once, gather
its logits back into the reference vocabulary, let the weighting rule choose one weight per
member on the prompt (`weights_on`), and score (`option_score`: sum or per-token mean) or
decode with sum_k w_k * logits_k. Generation keeps one KV cache per member, so each new
token costs one single-position forward per member whatever the text length.

The weights chosen for every request are appended to a JSONL file in the cell's workdir
(so a resumed run still knows the weights of answers served from lm-eval's response
cache), summarised into the method report and attached to each logged sample through
`sample_annotations`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM, hash_args
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from harness.contract import MethodReport
from harness.errors import ModelLoadError, UsageError
from harness.fusion._alignment import cached_map, special_ids, vocabulary
from harness.fusion._options import PackOptions
from harness.fusion._weights import Weighting, fuse
from harness.lm import batch_backoff, initial_batch_size
from harness.lm._prefix_cache import (MIN_SHARED_TOKENS, PrefixCache, expanded_cache,
                                      generation_prefix, shared_prefix_groups, shared_prompts,
                                      tree_runs)
from harness.lm._token_tree import TokenTree
from harness.run import progress

DEFAULT_MAX_LENGTH = 2048
RECORD_FILE = "fusion-weights.jsonl"


@dataclass
class Member:
    name: str
    model: Any
    tokenizer: Any
    family: int = 0  # members of one family share a vocabulary and need no alignment


def tokenizer_families(tokenizers: Sequence[Any]) -> list[int]:
    """Family index per tokenizer: equal vocabularies and special tokens share one."""
    seen: dict[str, int] = {}
    families = []
    for tokenizer in tokenizers:
        digest = hashlib.sha256(json.dumps([vocabulary(tokenizer), special_ids(tokenizer)],
                                           ensure_ascii=False).encode()).hexdigest()
        families.append(seen.setdefault(digest, len(seen)))
    return families


def position_limit(model: Any) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class Pack:
    """K members plus their vocabulary maps into each reference family."""

    def __init__(self, members: Sequence[Member], device: str, map_cache: Path | None = None,
                 prefix_cache: bool = True) -> None:
        families = tokenizer_families([m.tokenizer for m in members])
        for member, family in zip(members, families):
            member.family = family
        self.members = list(members)
        self.device = torch.device(device)
        self.map_cache = map_cache
        self.family_tokenizer: dict[int, Any] = {}
        for member in self.members:
            self.family_tokenizer.setdefault(member.family, member.tokenizer)
        self.map_counts: dict[str, dict[str, int]] = {}
        self._index: dict[tuple[int, int], torch.Tensor] = {}
        self.prefix_caches = [PrefixCache(m.model, enabled=prefix_cache, keep_logits=True)
                              for m in self.members]

    def __len__(self) -> int:
        return len(self.members)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def vocab_size(self, family: int) -> int:
        return len(self.family_tokenizer[family])

    def index(self, family: int, member: int) -> torch.Tensor | None:
        """Reference id -> member id, or None when the member is of the reference family."""
        target = self.members[member].family
        if target == family:
            return None
        if (family, target) not in self._index:
            mapping = cached_map(self.family_tokenizer[family], self.family_tokenizer[target],
                                 self.map_cache)
            names = (self.family_name(family), self.family_name(target))
            self.map_counts[" -> ".join(names)] = mapping.counts
            self._index[family, target] = torch.as_tensor(mapping.index, device=self.device)
        return self._index[family, target]

    def family_name(self, family: int) -> str:
        return next(m.name for m in self.members if m.family == family)

    def translate(self, family: int, member: int, ids: torch.Tensor) -> torch.Tensor:
        index = self.index(family, member)
        return ids if index is None else index[ids]

    def align(self, family: int, member: int, logits: torch.Tensor) -> torch.Tensor:
        """The member's logits gathered into the reference vocabulary (by token id), float32."""
        index = self.index(family, member)
        width = self.vocab_size(family)
        if index is None:
            if logits.shape[-1] < width:
                raise ModelLoadError(f"{self.members[member].name}: {logits.shape[-1]} logits for a "
                                     f"vocabulary of {width} tokens")
            return logits[..., :width].float()
        return logits.index_select(-1, index).float()

    @torch.no_grad()
    def logits(self, family: int, ids: torch.Tensor, attention_mask: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Aligned logits of every member, shape [K, *ids.shape, V_reference]."""
        return torch.stack([
            self.align(family, k, member.model(input_ids=self.translate(family, k, ids),
                                               attention_mask=attention_mask).logits)
            for k, member in enumerate(self.members)])


    @property
    def prefix_cache(self) -> bool:
        """Whether every member may still continue cached prefixes."""
        return all(cache.enabled for cache in self.prefix_caches)

    def prefix_cache_usable(self, family: int, sample: list[int], shared: int) -> bool:
        """Whether every member continues a cached prefix as it runs the whole input
        (probed once per member, on `sample` split after `shared` tokens)."""
        ids = torch.tensor(sample, device=self.device)
        return all(cache.usable(self.translate(family, k, ids).tolist(), shared)
                   for k, cache in enumerate(self.prefix_caches))

    @property
    def tree_width(self) -> int:
        """What caps a tree of whole rows (`chunk_budget`): the narrowest member's width."""
        return min(cache.width for cache in self.prefix_caches)

    @torch.no_grad()
    def tree_logits(self, family: int, prefix: list[int], tree: TokenTree
                    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Aligned logits of every member for `tree`'s nodes continuing `prefix` from its
        cache: ([K, len(prefix), V] of the prefix, or None when it is empty and the tree
        holds whole rows; [K, nodes, V] of the tree)."""
        prefix_ids = torch.tensor(prefix, dtype=torch.long, device=self.device)
        tree_ids = torch.tensor(tree.ids, device=self.device)
        visible = tree.visible(len(prefix), self.device)  # the same for every member
        prefixes, nodes = [], []
        for k, cache in enumerate(self.prefix_caches):
            own_prefix = self.translate(family, k, prefix_ids).tolist()
            if own_prefix:
                _, logits = cache.prefix(own_prefix)
                assert logits is not None  # kept: the pack's caches keep their logits
                prefixes.append(self.align(family, k, logits[0]))
            own_tree = TokenTree(tuple(self.translate(family, k, tree_ids).tolist()),
                                 tree.parents, tree.depths, tree.paths)
            nodes.append(self.align(family, k, cache.tree_logits(own_prefix, own_tree,
                                                                 visible=visible)))
        return (torch.stack(prefixes) if prefixes else None), torch.stack(nodes)


class _RowLogits:
    """One row's aligned member logits [K, positions, V], the shared prefix's kept apart."""

    def __init__(self, prefix: torch.Tensor | None, own: torch.Tensor) -> None:
        self.prefix, self.own = prefix, own
        self.shared = 0 if prefix is None else prefix.shape[1]

    def span(self, start: int, end: int) -> torch.Tensor:
        """Positions start..end-1 of the whole sequence."""
        if start >= self.shared:
            return self.own[:, start - self.shared:end - self.shared]
        assert self.prefix is not None
        return torch.cat([self.prefix[:, start:], self.own[:, :end - self.shared]], 1)


def request_key(args: Sequence[Any]) -> str:
    return hash_args("fusion", args)


class PackLM(LM):
    """lm-eval's three request types answered by a weighted logit fusion of a pack."""

    def __init__(self, pack: Pack, weighting: Weighting, options: PackOptions,
                 batch_size: int | str = 1, record_path: Path | None = None,
                 report: MethodReport | None = None) -> None:
        super().__init__()
        weighting.check_members(len(pack))
        if options.reference != "auto" and int(options.reference) >= len(pack):
            raise UsageError(f"reference {options.reference} is not a member index (pack of {len(pack)})")
        self.pack = pack
        self.weighting = weighting
        self.options = options
        self.batch_setting = batch_size
        self.batch_size = initial_batch_size(batch_size)
        limits = [n for n in (position_limit(m.model) for m in pack.members) if n]
        self.max_length = options.max_length or (min(limits) if limits else DEFAULT_MAX_LENGTH)
        self._reference_cache: dict[str, int] = {}
        self._weights_cache: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}
        self._shared_prompts: dict[int, list[tuple[int, ...]]] = {}  # per reference family
        self.begin(record_path, report if report is not None else MethodReport())

    def begin(self, record_path: Path | None, report: MethodReport) -> None:
        """Keep this cell's weight records in `record_path` and its summary in `report`.
        Records an interrupted run left there are read back, so a resumed cell whose answers
        come from lm-eval's response cache still reports its weights and maps."""
        self.record_path, self.report = record_path, report
        self.records: dict[str, dict[str, Any]] = {}
        if record_path is not None and record_path.exists():
            for line in record_path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.records[entry.pop("key")] = entry
        if self.records:
            names = {e["reference"] for e in self.records.values()}
            for member in self.pack.members:  # the maps those references used
                if member.name in names:
                    for k in range(len(self.pack)):
                        self.pack.index(member.family, k)
            self._update_report()

    def begin_cell(self, ctx: Any) -> None:
        """The host reuses this LM for a row's next task: records and report start afresh."""
        self.begin(Path(ctx.workdir) / RECORD_FILE, ctx.report)

    @property
    def device(self) -> torch.device:
        return self.pack.device

    # ------------------------------------------------------------------ tokenization

    def tokenizer(self, family: int) -> Any:
        return self.pack.family_tokenizer[family]

    def encode(self, family: int, text: str, special: bool = True) -> list[int]:
        """As lm-eval's HFLM: the tokenizer's own special tokens unless the text has its BOS."""
        tokenizer = self.tokenizer(family)
        if special and tokenizer.bos_token and text.startswith(tokenizer.bos_token):
            special = False
        return tokenizer.encode(text, add_special_tokens=special)

    def prefix_id(self, family: int) -> int:
        tokenizer = self.tokenizer(family)
        return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    def encode_pair(self, family: int, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's TemplateLM split: trailing context spaces move into the continuation."""
        if context == "":
            tokens = self.encode(family, continuation, special=False)
            prefix = self.prefix_id(family)
            return ([prefix], tokens) if tokens[:1] != [prefix] else (tokens[:1], tokens[1:])
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.encode(family, context + continuation)
        context_ids = self.encode(family, context)
        return context_ids, whole[len(context_ids):]

    def weight_mask(self, family: int, targets: torch.Tensor, limit: int) -> torch.Tensor:
        """Positions before `limit` whose target is not the reference EOS (official rule,
        without the released code's fallback that dropped token id 0)."""
        mask = torch.arange(len(targets), device=targets.device) < limit
        eos = self.tokenizer(family).eos_token_id
        return mask if eos is None else mask & (targets != eos)

    # ------------------------------------------------------------------ reference choice

    def reference_text(self, request: Any, text: str) -> str:
        """What 'auto' picks the reference tokenizer on: `text` (the request's context), or
        with reference_on=question the document's question without demonstrations."""
        if self.options.reference_on == "context":
            return text
        field = self.options.question_field
        doc = getattr(request, "doc", None)
        if not isinstance(doc, dict) or not isinstance(doc.get(field), str):
            fields = sorted(doc) if isinstance(doc, dict) else []
            raise UsageError(f"reference_on=question reads the document field {field!r}, which "
                             f"this task's documents lack (fields: {', '.join(fields) or 'none'}); "
                             f"name one with -o question_field=...")
        return doc[field]

    def reference_family(self, text: str) -> int:
        if self.options.reference != "auto":
            return self.pack.members[int(self.options.reference)].family
        if len(self.pack.family_tokenizer) == 1:
            return self.pack.members[0].family
        if text not in self._reference_cache:
            self._reference_cache[text] = self._lowest_perplexity_family(text)
        return self._reference_cache[text]

    @torch.no_grad()
    def _lowest_perplexity_family(self, text: str) -> int:
        """Official `select_tokenizer`: each member scores the text in its own tokenization."""
        best_loss, best_family = float("inf"), self.pack.members[0].family
        for member in self.pack.members:
            ids = self.encode(member.family, text)[-self.max_length:]
            if len(ids) < 2:
                continue
            tokens = torch.tensor([ids], device=self.device)
            logits = member.model(input_ids=tokens).logits[0, :-1].float()
            targets = tokens[0, 1:]
            mask = self.weight_mask(member.family, targets, len(targets))
            if bool(mask.any()):
                loss = F.cross_entropy(logits[mask], targets[mask]).item()
                if loss < best_loss:
                    best_loss, best_family = loss, member.family
        return best_family

    # ------------------------------------------------------------------ scoring

    def _score(self, family: int, items: Sequence[tuple[list[int], list[int]]],
               weights_on: str | None, mean: bool = False) -> Iterator[tuple[float, bool, torch.Tensor]]:
        """(log-likelihood, is_greedy, weights) of each continuation after its context; with
        `mean` the log-likelihood is the per-token mean instead of the sum. Items whose
        contexts share a prefix continue it from each member's cache of it."""
        sequences = [(ctx + cont)[-(self.max_length + 1):] for ctx, cont in items]
        firsts = [max(0, len(s) - 1 - len(cont)) for s, (_, cont) in zip(sequences, items)]
        results: list[Any] = [None] * len(items)
        for rows, prefix_logits, logits in self._forwards(family, sequences, firsts):
            for index, own in zip(rows, logits):
                results[index] = self._score_row(family, sequences[index], firsts[index],
                                                 _RowLogits(prefix_logits, own), weights_on, mean)
        yield from results

    def _forwards(self, family: int, sequences: list[list[int]], firsts: list[int]
                  ) -> Iterator[tuple[Sequence[int], torch.Tensor | None, list[torch.Tensor]]]:
        """Per forward: the items it scores, the aligned logits of the prefix they continue
        from the members' caches (None: none), and each item's own [K, positions, V]. The
        items of groups sharing a context prefix run as token trees (`tree_runs`), then the
        rest in their order, `batch_size` rows at a time."""
        groups = shared_prefix_groups([s[:f] for s, f in zip(sequences, firsts)]) \
            if self.pack.prefix_cache else []
        if groups and not self.pack.prefix_cache_usable(family, sequences[groups[0].members[0]][:-1],
                                                       groups[0].length):
            groups = []
        inputs = [sequence[:-1] for sequence in sequences]
        for run in tree_runs(inputs, groups, self.batch_size, self.pack.tree_width):
            tree = TokenTree.of([inputs[i][run.shared:] for i in run.rows])
            prefix_logits, nodes = self.pack.tree_logits(family, inputs[run.rows[0]][:run.shared],
                                                         tree)
            yield run.rows, prefix_logits, [nodes[:, list(path)] for path in tree.paths]
        grouped = {i for group in groups for i in group.members}
        rest = [i for i in range(len(sequences)) if i not in grouped]
        for start in range(0, len(rest), self.batch_size):
            rows = rest[start:start + self.batch_size]
            width = max(len(inputs[i]) for i in rows)
            ids = torch.zeros((len(rows), width), dtype=torch.long, device=self.device)
            attention = torch.zeros_like(ids)
            for row, index in enumerate(rows):
                ids[row, :len(inputs[index])] = torch.tensor(inputs[index])
                attention[row, :len(inputs[index])] = 1
            yield rows, None, list(self.pack.logits(family, ids, attention).unbind(1))

    def _score_row(self, family: int, sequence: list[int], first: int, logits: "_RowLogits",
                   weights_on: str | None, mean: bool) -> tuple[float, bool, torch.Tensor]:
        length = len(sequence) - 1
        targets = torch.tensor(sequence[1:], device=self.device)
        if weights_on == "context":
            key = (family, tuple(sequence[:first + 1]))
            if key not in self._weights_cache:
                mask = self.weight_mask(family, targets, first)
                self._weights_cache[key] = self.weighting(logits.span(0, length), targets, mask)
            weights = self._weights_cache[key]
        else:
            weights = self.weighting(logits.span(0, length), targets,
                                     self.weight_mask(family, targets, length))
        scored = fuse(logits.span(first, length), weights).log_softmax(-1)
        wanted = targets[first:]
        token_loglikelihoods = scored.gather(-1, wanted[:, None])
        loglikelihood = (token_loglikelihoods.mean() if mean else token_loglikelihoods.sum()).item()
        greedy = bool((scored.argmax(-1) == wanted).all())
        return loglikelihood, greedy, weights

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return batch_backoff(self, self.batch_setting, lambda: self._loglikelihood(requests))

    def _loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        prepared = []
        for position, request in enumerate(requests):
            context, continuation = request.args
            family = self.reference_family(self.reference_text(request, context or continuation))
            prepared.append((family, position, self.encode_pair(family, context, continuation)))
        # longest first within a reference family: padding waste stays small
        prepared.sort(key=lambda p: (p[0], -len(p[2][0]) - len(p[2][1])))
        results: list[Any] = [None] * len(requests)
        for family in sorted({p[0] for p in prepared}):
            group = [p for p in prepared if p[0] == family]
            scores = self._score(family, [p[2] for p in group], self.options.weights_on,
                                 mean=self.options.option_score == "mean")
            for (_, position, _), (loglikelihood, greedy, weights) in zip(group, scores):
                request = requests[position]
                results[position] = (loglikelihood, greedy)
                self._record(request.args, family, [weights])
                self.cache_hook.add_partial("loglikelihood", request.args, results[position])
        self._update_report()
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        return batch_backoff(self, self.batch_setting, lambda: self._loglikelihood_rolling(requests))

    def _loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        results = []
        for request in requests:
            (text,) = request.args
            family = self.reference_family(text)
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                self.encode(family, text), self.prefix_id(family),  # as HFLM does
                self.max_length, context_len=1)]
            scores = list(self._score(family, windows, "sequence"))
            total = sum(s[0] for s in scores)
            results.append(total)
            self._record(request.args, family, [s[2] for s in scores])
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        self._update_report()
        return results

    # ------------------------------------------------------------------ generation

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy fused decoding in batches of `batch_size` requests sharing a reference
        tokenizer and generation settings, longest prompt first (as lm-eval's HFLM)."""
        return batch_backoff(self, self.batch_setting, lambda: self._generate_until(requests))

    def _generate_until(self, requests: list[Any]) -> list[str]:
        groups: dict[tuple[int, int, tuple[str, ...]], list[tuple[int, list[int]]]] = {}
        for position, request in enumerate(requests):
            context, settings = request.args
            settings = dict(settings or {})
            if settings.get("do_sample"):
                raise UsageError("fusion methods decode greedily; do_sample is not supported")
            family = self.reference_family(self.reference_text(request, context))
            until = settings.get("until") or []
            until = (until,) if isinstance(until, str) else tuple(until)
            budget = int(settings.get("max_gen_toks", 256))
            prompt = self.encode(family, context)[-max(1, self.max_length - budget):]
            groups.setdefault((family, budget, until), []).append((position, prompt))
        results: list[str] = [""] * len(requests)
        progress.current().phase("requests (generate_until)", len(requests))
        self._shared_prompts = shared_prompts({family: [p for _, p in items]
                                               for (family, _, _), items in groups.items()})
        for (family, budget, until), items in groups.items():
            items.sort(key=lambda item: -len(item[1]))
            for start in range(0, len(items), self.batch_size):
                batch = items[start:start + self.batch_size]
                decoded = self.generate_batch(family, [p for _, p in batch], budget, until)
                for (position, _), (tokens, weights) in zip(batch, decoded):
                    text = self.tokenizer(family).decode(tokens, skip_special_tokens=True)
                    for stop in until:
                        text = text.split(stop)[0]
                    results[position] = text
                    self._record(requests[position].args, family, [weights])
                    self.cache_hook.add_partial("generate_until", requests[position].args, text)
                progress.current().advance(len(batch))
        self._update_report()
        return results

    def _generation_prefix(self, family: int, prompts: list[list[int]]) -> int:
        """How many leading ids of a generation batch continue the members' caches (0: none)."""
        if not self.pack.prefix_cache:
            return 0
        shared = generation_prefix(prompts, self._shared_prompts.get(family, []))
        if shared < MIN_SHARED_TOKENS or not self.pack.prefix_cache_usable(family, prompts[0], shared):
            return 0
        return shared

    def generate_tokens(self, family: int, prompt: list[int], budget: int,
                        until: Sequence[str] = ()) -> tuple[list[int], torch.Tensor]:
        """One prompt's greedy fused tokens and weights (a batch of one)."""
        [(tokens, weights)] = self.generate_batch(family, [prompt], budget, tuple(until))
        return tokens, weights

    @torch.no_grad()
    def generate_batch(self, family: int, prompts: list[list[int]], budget: int,
                       until: Sequence[str] = (), return_logits: bool = False
                       ) -> list[tuple[list[int], torch.Tensor]]:
        """Greedy fused decoding of several prompts at once: left padding, one KV cache per
        member, position ids counted over each row's own tokens, weights fitted on each
        row's own prompt. A row stops at EOS, at a stop string (tested on the tail of its
        text, not the whole) or at `budget`; the batch stops when every row has.

        With `return_logits`, each row's fused next-token logits per step come back as a
        third element (tests compare them with a batch of one)."""
        tokenizer = self.tokenizer(family)
        eos, pad = tokenizer.eos_token_id, self.prefix_id(family)
        rows, width = len(prompts), max(len(p) for p in prompts)
        shared = self._generation_prefix(family, prompts)
        ids = torch.full((rows, width), pad, dtype=torch.long, device=self.device)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):  # the shared prefix, padding, the row's own ids
            ids[row, :shared] = torch.tensor(prompt[:shared])
            ids[row, width - len(prompt) + shared:] = torch.tensor(prompt[shared:])
            mask[row, :shared] = 1
            mask[row, width - len(prompt) + shared:] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        caches, aligned, prefix_aligned = [], [], []
        for k, member in enumerate(self.pack.members):
            member_ids = self.pack.translate(family, k, ids)
            if shared:
                prefix, prefix_logits = self.pack.prefix_caches[k].prefix(member_ids[0, :shared].tolist())
                assert prefix_logits is not None  # kept: the pack's caches keep their logits
                prefix_aligned.append(self.pack.align(family, k, prefix_logits[0]))
                out = member.model(input_ids=member_ids[:, shared:], attention_mask=mask,
                                   position_ids=positions[:, shared:], use_cache=True,
                                   cache=expanded_cache(prefix, rows, member.model.config))
            else:
                out = member.model(input_ids=member_ids, attention_mask=mask,
                                   position_ids=positions, use_cache=True)
            caches.append(out.cache)
            aligned.append(self.pack.align(family, k, out.logits))
        prompt_logits = torch.stack(aligned)  # [K, rows, width - shared, V]
        shared_logits = torch.stack(prefix_aligned) if shared else None
        weights = []
        for row, prompt in enumerate(prompts):
            own = _RowLogits(shared_logits, prompt_logits[:, row, width - len(prompt):])
            targets = torch.tensor(prompt[1:], device=self.device)
            weights.append(self.weighting(own.span(0, len(prompt) - 1), targets,
                                          self.weight_mask(family, targets, len(targets))))
        next_logits = [fuse(prompt_logits[:, row, -1], weights[row]) for row in range(rows)]
        del prompt_logits, aligned, shared_logits, prefix_aligned
        longest_stop = max((len(stop) for stop in until), default=0)
        generated: list[list[int]] = [[] for _ in prompts]
        steps: list[list[torch.Tensor]] = [[] for _ in prompts]
        done = [False] * rows
        last_position = positions[:, -1]
        while not all(done):
            step = torch.full((rows, 1), pad, dtype=torch.long, device=self.device)
            for row in range(rows):
                if done[row]:
                    continue
                if return_logits:
                    steps[row].append(next_logits[row])
                token = int(next_logits[row].argmax())
                if token == eos:
                    done[row] = True
                    continue
                generated[row].append(token)
                step[row, 0] = token
                tail = tokenizer.decode(generated[row][-(2 * longest_stop + 4):],
                                        skip_special_tokens=True) if until else ""
                if len(generated[row]) >= budget or any(stop in tail for stop in until):
                    done[row] = True
            if all(done):
                break
            mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=mask.device)], 1)
            last_position = last_position + 1
            aligned = []
            for k, member in enumerate(self.pack.members):
                out = member.model(input_ids=self.pack.translate(family, k, step),
                                   attention_mask=mask, position_ids=last_position[:, None],
                                   cache=caches[k], use_cache=True)
                caches[k] = out.cache
                aligned.append(self.pack.align(family, k, out.logits[:, -1]))
            stacked = torch.stack(aligned)  # [K, rows, V]
            next_logits = [fuse(stacked[:, row], weights[row]) for row in range(rows)]
        if return_logits:
            return [(g, w, torch.stack(s)) for g, w, s in zip(generated, weights, steps)]  # type: ignore[misc]
        return list(zip(generated, weights))

    # ------------------------------------------------------------------ weight records

    def _record(self, args: Sequence[Any], family: int, weights: Sequence[torch.Tensor]) -> None:
        key = request_key(args)
        entry = {"reference": self.pack.family_name(family),
                 "weights": [[round(float(w), 6) for w in vector] for vector in weights]}
        self.records[key] = entry
        if self.record_path is not None:
            self.record_path.parent.mkdir(parents=True, exist_ok=True)
            with self.record_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": key, **entry}) + "\n")

    def sample_annotations(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The weights behind one logged lm-eval sample (one entry per request of the doc)."""
        found = [self.records.get(request_key(args)) for args in sample.get("arguments") or []]
        entries = [e for e in found if e is not None]
        if not entries:
            return {}
        vectors = [v for e in entries for v in e["weights"]]
        mean = [sum(v[k] for v in vectors) / len(vectors) for k in range(len(self.pack))]
        return {"fusion": {"members": self.pack.names,
                           "mean_weights": [round(w, 6) for w in mean],
                           "reference": [e["reference"] for e in entries],
                           "weights": [e["weights"] for e in entries]}}

    def _update_report(self) -> None:
        vectors = torch.tensor([v for e in self.records.values() for v in e["weights"]],
                               dtype=torch.float64)
        summary: dict[str, Any] = {"rule": self.weighting.name, "members": self.pack.names,
                                   "protocol": self.options.protocol,
                                   "weights_on": self.options.weights_on,
                                   "requests": len(self.records)}
        if len(vectors):
            summary["weights"] = {
                name: {"mean": round(float(column.mean()), 6),
                       "std": round(float(column.std(unbiased=False)), 6),
                       "min": round(float(column.min()), 6), "max": round(float(column.max()), 6)}
                for name, column in zip(self._unique_names(), vectors.T)}
        summary["reference"] = dict(Counter(e["reference"] for e in self.records.values()))
        if self.pack.map_counts:
            summary["vocabulary_maps"] = self.pack.map_counts
        self.report.facts["fusion"] = summary

    def _unique_names(self) -> list[str]:
        names = self.pack.names
        return [f"{i}:{n}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def load_pack(ctx: Any) -> Pack:
    """The members of `ctx.models`, loaded through transformers, on the cell's device."""
    from harness.models.loading import load_causal_lm

    members = []
    for ref in ctx.models:
        model, tokenizer = load_causal_lm(ref)
        members.append(Member(ref.short_name, model.to(ctx.device).eval(), tokenizer))
    return Pack(members, ctx.device, prefix_cache=ctx.prefix_cache)


def build_pack_lm(ctx: Any, weighting: Weighting) -> PackLM:
    """What a fusion method's `build(ctx)` returns: the pack of `ctx.models` behind `weighting`."""
    weighting.check_members(len(ctx.models))
    pack = load_pack(ctx)
    total = sum(p.numel() for m in pack.members for p in m.model.parameters())
    ctx.report.trainable_params, ctx.report.total_params = 0, total
    return PackLM(pack, weighting, ctx.options, batch_size=ctx.batch_size,
                  record_path=Path(ctx.workdir) / RECORD_FILE, report=ctx.report)
