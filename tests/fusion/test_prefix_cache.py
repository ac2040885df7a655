"""Shared-prefix KV caching changes no answer: on every built-in text task's embedded sample,
`single` (lm-eval's HFLM) and a three-member PackLLM pack (two tokenizer families) give the
log-likelihoods of the uncached run within 1e-4, the same greedy flags and identical greedy
generations, and the cached path is taken where prompts share a few-shot prefix.

The default run checks two cases (MMLU with `single`, FLORES few-shot generation with the
pack: about 30 s on 2 cores); HARNESS_SLOW_TESTS=1 checks every task with both (about 11
minutes)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from fusion.fusion_support import Request
from lm_eval.api.model import LM

from harness.contract import Capability, MethodRow, ModelRef, TaskColumn
from harness.fusion._options import PackOptions
from harness.fusion._pack_lm import Member, Pack, PackLM
from harness.fusion._weights import PerplexitySoftmax
from harness.host import load_host
from harness.lm import _prefix_cache as prefix_cache
from harness.lm._prefix_cache import PrefixCachedHFLM, PrefixGroup, shared_prefix_groups
from harness.models.loading import load_causal_lm
from harness.options import build_options
from harness.results.store import Store
from harness.run.lm_eval_adapter import run_lm_eval
from harness.run.plan import plan_cells
from harness.settings import RunSettings

TOLERANCE = 1e-4
# Small generation budgets and few-shot prompts wherever a task has them (the shape caching is for).
TASK_OPTIONS: dict[str, dict[str, Any]] = {
    "gsm8k": {"max_gen_toks": 8},
    "flores": {"max_gen_toks": 8, "num_fewshot": 2, "directions": ["fra_Latn-eng_Latn"]},
    "humaneval": {"max_gen_toks": 8, "allow_code_execution": True, "allow_weak_isolation": True},
    "vicuna_bench": {"max_gen_toks": 8},
}
# prompts share a prefix, so the cache must be used (lm-eval draws GSM8K's shots per document)
FEW_SHOT = ("mmlu", "flores")
DEFAULT_CASES = {("mmlu", "single"), ("flores", "pack")}
SLOW = bool(os.environ.get("HARNESS_SLOW_TESTS"))


class Comparing(LM):
    """An lm-eval LM answering with the uncached LM, after checking the cached one agrees."""

    def __init__(self, cached: Any, uncached: Any) -> None:
        super().__init__()
        self.cached, self.uncached, self.compared = cached, uncached, 0

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        got, want = self.cached.loglikelihood(requests), self.uncached.loglikelihood(requests)
        for request, (value, greedy), (expected, expected_greedy) in zip(requests, got, want):
            assert abs(value - expected) <= TOLERANCE, request.args
            assert greedy == expected_greedy, request.args
        self.compared += len(requests)
        return want

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        got = self.cached.loglikelihood_rolling(requests)
        want = self.uncached.loglikelihood_rolling(requests)
        assert max(abs(a - b) for a, b in zip(got, want)) <= TOLERANCE
        self.compared += len(requests)
        return want

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        got, want = self.cached.generate_until(requests), self.uncached.generate_until(requests)
        assert got == want
        self.compared += len(requests)
        return want


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[Any, Any]]:
    torch.manual_seed(0)
    return {name: load_causal_lm(ModelRef(f"harness-zoo/{name}", dtype="float32"))
            for name in ("tiny-llama", "tiny-llama-b", "tiny-gpt2")}


def _single(models: dict[str, tuple[Any, Any]], enabled: bool) -> Any:
    model, tokenizer = models["tiny-llama"]
    return PrefixCachedHFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, device="cpu",
                            prefix_cache=enabled)


def _pack(models: dict[str, tuple[Any, Any]], enabled: bool) -> Any:
    members = [Member(name, *models[name]) for name in models]
    return PackLM(Pack(members, "cpu", prefix_cache=enabled), PerplexitySoftmax(),
                  PackOptions(), batch_size=4)


# image+text requests go through HFMultimodalLM, uncached
TEXT_TASKS = sorted(name for name, spec in load_host().tasks.items()
                    if Capability.VISION not in spec.requires)


@pytest.mark.parametrize("kind", ["single", "pack"])
@pytest.mark.parametrize("task", TEXT_TASKS)
def test_cached_prefixes_change_no_answer(task, kind, models, tmp_path, monkeypatch) -> None:
    if not SLOW and (task, kind) not in DEFAULT_CASES:
        pytest.skip("every task and kind: set HARNESS_SLOW_TESTS=1")
    host = load_host()
    single, spec = host.method("single"), host.task(task)
    quick = {} if SLOW or task != "mmlu" else {"subjects": ["astronomy"]}
    options = build_options(spec.options, {**TASK_OPTIONS.get(task, {}), **quick}, task)
    plan = plan_cells(host, [MethodRow(single, (ModelRef("harness-zoo/tiny-llama"),),
                                       single.options())],
                      [TaskColumn(spec, options)], RunSettings(data="embedded", limit=4 if SLOW else 2),
                      Store(tmp_path / "store"))
    [cell] = plan.cells
    assert cell.state == "pending", cell.reason
    prefixes: list[int] = []
    original = prefix_cache.PrefixCache.prefix
    monkeypatch.setattr(prefix_cache.PrefixCache, "prefix",
                        lambda self, ids: prefixes.append(len(ids)) or original(self, ids))
    build = _single if kind == "single" else _pack
    comparing = Comparing(build(models, True), build(models, False))
    run_lm_eval(cell, comparing, tmp_path / "work")
    assert comparing.compared
    if task in FEW_SHOT:
        assert prefixes and min(prefixes) >= prefix_cache.MIN_SHARED_TOKENS


QUESTIONS = ["Which colour is the sky on a clear day?", "Which animal barks at the postman?",
             "What do bees make in their hives?", "Where does the sun rise in the morning?"]
OPTIONS = [" blue", " a dark red", " honey", " in the east"]


@pytest.mark.parametrize("kind", ["single", "pack"])
def test_short_questions_run_together_as_trees_of_whole_rows(kind, models, monkeypatch) -> None:
    """Zero-shot questions with short options: each question's rows fit in one tree of whole
    rows, so the questions share a few forwards, none continuing a cached prefix (only the
    probe builds one), with the uncached log-likelihoods and greedy flags."""
    requests = [Request((question + "\nAnswer:", option)) for question in QUESTIONS
                for option in OPTIONS]
    build = _single if kind == "single" else _pack
    want = build(models, False).loglikelihood(requests)
    monkeypatch.setattr(prefix_cache.PrefixCache, "width", property(lambda self: 256))
    forwards: list[tuple[int, int]] = []  # (model, cached prefix length) per tree
    original = prefix_cache.PrefixCache.tree_logits
    monkeypatch.setattr(prefix_cache.PrefixCache, "tree_logits", lambda self, prefix, *a, **k: (
        forwards.append((id(self.model), len(prefix))) or original(self, prefix, *a, **k)))
    got = build(models, True).loglikelihood(requests)
    for (value, greedy), (expected, expected_greedy) in zip(got, want):
        assert abs(value - expected) <= TOLERANCE and greedy == expected_greedy
    for model in {model for model, _ in forwards}:
        prefixes = [length for m, length in forwards if m == model]
        # the probe's two trees (one continuing its cache, one of whole rows), then the questions'
        assert prefixes[0] and not any(prefixes[1:])
        assert 1 <= len(prefixes) - 2 < len(QUESTIONS)


def test_groups_keep_the_longest_shared_prefixes() -> None:
    shot_a, shot_b = list(range(100, 140)), list(range(200, 240))
    sequences = [shot_a + [1, 2], shot_b + [3], shot_a + [4], shot_b + [5, 6], [7] * 50,
                 shot_a + [1, 9]]
    groups = shared_prefix_groups(sequences)
    by_members = {frozenset(g.members): g.length for g in groups}
    # requests 0 and 5 share 41 ids, but one group of three over the 40 shared with 2 saves more
    assert by_members == {frozenset({0, 2, 5}): 40, frozenset({1, 3}): 40}
    # too short a shared prefix is not worth a group
    assert shared_prefix_groups([[1, 2, 3, 4], [1, 2, 3, 5]]) == []
    assert shared_prefix_groups([[1] * 20 + [2], [1] * 20 + [3]]) == [PrefixGroup(20, (0, 1))]


class Dropping(torch.nn.Module):
    """A model that drops one argument it is handed: the cache (as a wrapper reading only its
    input would) or the attention mask (as one building its own causal mask would)."""

    def __init__(self, model: Any, dropped: str) -> None:
        super().__init__()
        self.inner, self.config, self.dtype, self.dropped = model, model.config, model.dtype, dropped

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        kwargs.pop(self.dropped, None)
        return self.inner(input_ids=input_ids, **kwargs)


@pytest.mark.parametrize("dropped", ["cache", "attention_mask"])
def test_a_model_that_cached_prefixes_would_change_runs_uncached(dropped, models) -> None:
    model, _ = models["tiny-llama"]
    sample = list(range(5, 45))
    assert prefix_cache.PrefixCache(model).usable(sample, 30)
    dropping = prefix_cache.PrefixCache(Dropping(model, dropped))
    assert not dropping.usable(sample, 30) and not dropping.enabled
