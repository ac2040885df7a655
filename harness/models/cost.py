"""Counting what a cell computes: tokens, forward passes and FLOPs per model, by phase.

Every model the host loads (`harness.models.loading`) is watched: a forward pre-hook counts the
positions of each call into the meter of the cell running now, under that cell's current
phase ("build", "inference", "scoring"). One mechanism in the host covers every method:
a pack of K members is K watched models, so its K-fold cost shows without the plugin
doing anything. Work outside the models (PackLLM's weighted sum of K logit vectors) is
added with `add_extra_flops`.

Answers lm-eval's response cache kept from an interrupted run come with the work counted
for them then (`harness.run.response_cache`), which `restore` adds back: a resumed cell counts
what an uninterrupted one does.

FLOPs are estimated as 2 * parameters * positions (a multiply and an add per weight per
position, Kaplan et al. 2020); the attention's quadratic term is left out, which
understates long contexts. Positions are what the model computed, padding included: a prompt prefix that several
requests share (`harness.lm._prefix_cache`) counts once.
Parameters are the weights of matrix products: embedding tables (lookups) are left out.

A wrapper that reaches a watched model through its bound `forward` skips the model's hooks
(peft's adaption prompt does); `watch_wrapper` counts such calls at the wrapper. A cell
whose method holds model parameters but whose inference no watched model saw fails, rather
than record 0 FLOPs as if measured.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from harness.contract.reports import MethodReport
from harness.errors import HarnessError
from harness.results.records import CellCost, ModelCost, PhaseCost

PHASES = ("build", "inference", "scoring")
_WATCHED = "_harness_cost_name"
_CALLS = "_harness_cost_calls"  # how often the model's hook has fired
PROMPT_PREFIX = "_harness_prompt_prefix"  # on a KV cache: how many of its positions are prompt


@dataclass
class _Usage:
    name: str
    parameters: int
    prompt_tokens: int = 0
    generated_tokens: int = 0
    forward_passes: int = 0


@dataclass
class CostMeter:
    """The counts of one cell. Models are told apart by object, so a pack holding the same
    checkpoint twice counts it twice."""

    phase: str = "build"
    usage: dict[str, dict[int, _Usage]] = field(
        default_factory=lambda: {phase: {} for phase in PHASES})
    extras: dict[str, dict[str, int]] = field(
        default_factory=lambda: {phase: {} for phase in PHASES})
    # Work done before this process, kept with cached answers (harness.run.response_cache)
    restored: dict[str, list[PhaseCost]] = field(
        default_factory=lambda: {phase: [] for phase in PHASES})

    def count(self, model: Any, prompt_tokens: int, generated_tokens: int) -> None:
        entries = self.usage[self.phase]
        entry = entries.get(id(model))
        if entry is None:
            entry = entries[id(model)] = _Usage(getattr(model, _WATCHED), matmul_parameters(model))
        entry.prompt_tokens += prompt_tokens
        entry.generated_tokens += generated_tokens
        entry.forward_passes += 1

    def add_extra(self, kind: str, flops: int) -> None:
        extras = self.extras[self.phase]
        extras[kind] = extras.get(kind, 0) + int(flops)

    def phase_cost(self, phase: str) -> PhaseCost:
        names = _unique([u.name for u in self.usage[phase].values()])
        models = [ModelCost(model=name, parameters=u.parameters, prompt_tokens=u.prompt_tokens,
                            generated_tokens=u.generated_tokens, forward_passes=u.forward_passes,
                            flops=2 * u.parameters * (u.prompt_tokens + u.generated_tokens))
                  for name, u in zip(names, self.usage[phase].values())]
        return combined([*self.restored[phase],
                         PhaseCost(models, dict(sorted(self.extras[phase].items())))])


def _unique(names: list[str]) -> list[str]:
    """Names with repeats numbered ("m", "m#2"), in first-use order."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique


def combined(parts: list[PhaseCost]) -> PhaseCost:
    """The sum of phase costs (document shards of one cell), model by model."""
    models: dict[str, ModelCost] = {}
    extras: dict[str, int] = {}
    for part in parts:
        for m in part.models:
            old = models.get(m.model)
            models[m.model] = m if old is None else ModelCost(
                m.model, m.parameters, old.prompt_tokens + m.prompt_tokens,
                old.generated_tokens + m.generated_tokens,
                old.forward_passes + m.forward_passes, old.flops + m.flops)
        for kind, flops in part.extra_flops.items():
            extras[kind] = extras.get(kind, 0) + flops
    total = sum(m.flops for m in models.values()) + sum(extras.values())
    return PhaseCost(list(models.values()), dict(sorted(extras.items())), total)


def difference(total: PhaseCost, part: PhaseCost) -> PhaseCost:
    """The work in `total` beyond `part` (an earlier reading of the same meter), model by
    model; models and extras without new work are left out."""
    before = {m.model: m for m in part.models}
    models = []
    for m in total.models:
        old = before.get(m.model)
        if old is not None:
            m = ModelCost(m.model, m.parameters, m.prompt_tokens - old.prompt_tokens,
                          m.generated_tokens - old.generated_tokens,
                          m.forward_passes - old.forward_passes, m.flops - old.flops)
        if m.forward_passes or m.tokens or m.flops:
            models.append(m)
    extras = {kind: flops - part.extra_flops.get(kind, 0)
              for kind, flops in total.extra_flops.items()
              if flops != part.extra_flops.get(kind, 0)}
    return combined([PhaseCost(models, extras)])


def apportioned(total: PhaseCost, weights: Sequence[float]) -> list[PhaseCost]:
    """`total` split in proportion to `weights` (cells evaluated together,
    harness.run.row), model by model; each count is split by largest remainders, so the
    parts add up to `total` exactly."""
    parts = [PhaseCost() for _ in weights]
    for m in total.models:
        counts = [_split(value, weights) for value in
                  (m.prompt_tokens, m.generated_tokens, m.forward_passes, m.flops)]
        for part, (prompt, generated, passes, flops) in zip(parts, zip(*counts)):
            part.models.append(ModelCost(m.model, m.parameters, prompt, generated, passes, flops))
    for kind, flops in total.extra_flops.items():
        for part, share in zip(parts, _split(flops, weights)):
            part.extra_flops[kind] = share
    return [combined([part]) for part in parts]


def _split(count: int, weights: Sequence[float]) -> list[int]:
    whole = sum(weights)
    if not whole:
        weights, whole = [1.0] * len(weights), float(len(weights))
    exact = [count * w / whole for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: shares[i] - exact[i])
    for i in by_remainder[:count - sum(shares)]:
        shares[i] += 1
    return shares


_active: CostMeter | None = None


@contextlib.contextmanager
def metering(meter: CostMeter) -> Iterator[CostMeter]:
    """Count into `meter` while the block runs (one cell at a time per process)."""
    global _active
    previous, _active = _active, meter
    reset_peak_memory()
    try:
        yield meter
    finally:
        _active = previous


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the block's model calls under phase `name` of the active meter."""
    meter = _active
    if meter is None:
        yield
        return
    previous, meter.phase = meter.phase, name
    try:
        yield
    finally:
        meter.phase = previous


def spent() -> PhaseCost:
    """The running cell's work so far in its current phase (nothing outside a cell)."""
    return PhaseCost() if _active is None else _active.phase_cost(_active.phase)


def restore(work: PhaseCost) -> None:
    """Count `work` done by an earlier, interrupted process into the running cell's
    current phase: the cost of answers it reuses from a cache."""
    if _active is not None:
        _active.restored[_active.phase].append(work)


def add_extra_flops(kind: str, flops: int) -> None:
    """Work a method does outside its models, counted into the running cell."""
    if _active is not None:
        _active.add_extra(kind, flops)


def watch(model: Any, name: str) -> Any:
    """Count `model`'s forward calls into whichever cell is running when they happen."""
    if getattr(model, _WATCHED, None) is None:
        setattr(model, _WATCHED, name)
        model.register_forward_pre_hook(_count_call, with_kwargs=True)
    return model


def watch_wrapper(wrapper: Any, model: Any) -> Any:
    """Count a call of `wrapper` (a peft model around the watched `model`) as a call of
    `model` when `model`'s own hooks did not see it: peft's adaption prompt reaches the
    model through its bound `forward`. When they did (LoRA, prompt tuning, whose virtual
    tokens only the model sees), the model's count stands alone."""
    # peft delegates unknown attributes to the model: look at the wrapper's own
    if getattr(model, _WATCHED, None) is None or _WATCHED in vars(wrapper):
        return wrapper
    calls: list[tuple[int, tuple[Any, ...], dict[str, Any]]] = []

    def enter(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        calls.append((_seen_calls(model), args, kwargs))

    def leave(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        seen, args, kwargs = calls.pop()
        if output is not None and _seen_calls(model) == seen:  # None: the call raised
            _count_call(model, args, kwargs)

    setattr(wrapper, _WATCHED, getattr(model, _WATCHED))
    wrapper.register_forward_pre_hook(enter, with_kwargs=True)
    wrapper.register_forward_hook(leave, with_kwargs=True, always_call=True)
    return wrapper


def _seen_calls(model: Any) -> int:
    return int(getattr(model, _CALLS, 0))


def _count_call(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    setattr(model, _CALLS, _seen_calls(model) + 1)
    if _active is None:
        return
    inputs = kwargs.get("input_ids")
    if inputs is None:
        inputs = args[0] if args else kwargs.get("inputs_embeds")
    if inputs is None or getattr(inputs, "ndim", 0) < 2:
        return
    positions = int(inputs.shape[0]) * int(inputs.shape[1])
    # transformers 5 names the KV cache `cache`; older code paths `past_key_values`
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    # a cache holding only a shared prompt prefix (harness.lm._prefix_cache) continues the prompt
    cached = cache is not None and _cache_length(cache) > getattr(cache, PROMPT_PREFIX, 0)
    _active.count(model, 0 if cached else positions, positions if cached else 0)


def _cache_length(cache: Any) -> int:
    length = getattr(cache, "get_seq_length", None)
    if callable(length):
        return int(length())
    return 1  # a legacy tuple cache is only ever passed once it holds something


def training_flops(model: Any, trainable: int, tokens: int) -> int:
    """A fit's FLOPs: (4 * parameters + 2 * trainable) * tokens, i.e. the forward pass, the
    activation gradients through every weight, and weight gradients of the trainable
    parameters only (6 * parameters * tokens for full fine-tuning, Kaplan et al. 2020);
    plus 2 * parameters * tokens for each model it runs forward only, without gradients
    (a submodule's `forward_only_models`, e.g. CALM's augmenting model)."""
    beside = sum(matmul_parameters(other) for other in forward_only_models(model))
    return (4 * matmul_parameters(model) + 2 * trainable + 2 * beside) * tokens


def forward_only_models(model: Any) -> list[Any]:
    """Models that `model`'s submodules run beside it without gradients: what their
    `forward_only_models` attributes list (models held outside the module tree)."""
    found: dict[int, Any] = {}
    for module in model.modules():
        for other in getattr(module, "forward_only_models", ()):
            found.setdefault(id(other), other)
    return list(found.values())


def matmul_parameters(model: Any) -> int:
    """Weights used in a matrix product at every position: all parameters but embedding
    tables (lookups: tokens, learned positions, token types, virtual prompt tokens); an
    output head tied to the token table counts once, as the head."""
    import torch

    tables = {id(module.weight) for module in model.modules()
              if isinstance(module, torch.nn.Embedding)}
    head = getattr(model, "get_output_embeddings", lambda: None)()
    head_weight = getattr(head, "weight", None)
    return sum(parameter.numel() for parameter in model.parameters()  # shared ones once
               if id(parameter) not in tables or parameter is head_weight)


def reset_peak_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> tuple[int | None, str]:
    """(bytes, kind): the accelerator's peak allocation since the cell began on a GPU,
    else the process's peak resident set so far (Linux reports KiB; it cannot be reset)."""
    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated()), "cuda_max_allocated"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024), "process_max_rss"


def cell_cost(meter: CostMeter | None, phases: Mapping[str, PhaseCost] | None,
              documents: int, timings: Mapping[str, float], report: MethodReport,
              device: str, expect_model_calls: bool = True) -> CellCost:
    """The cell's `CellCost` from its meter (or already summed phases, for document
    shards), its timings and the method's report (the shared training path reports
    trainable parameters, training tokens, their FLOPs and the fit's seconds). Raises when
    `expect_model_calls` (no answer came from a cache) and no model was seen answering."""
    if phases is None:
        assert meter is not None
        phases = {name: meter.phase_cost(name) for name in PHASES}
    inference = phases["inference"]
    if expect_model_calls and documents and not inference.models and report.total_params:
        raise HarnessError(
            f"cost: the method reports {report.total_params} model parameters but no "
            f"watched model ran while it answered {documents} documents, so its FLOPs would "
            "read 0; load models through harness.api.load_causal_lm, and a wrapper that "
            "calls a model's forward directly through harness.models.cost.watch_wrapper")
    memory, kind = peak_memory(device)
    wall = {"build": timings.get("build_s"), "fit": report.train_seconds,
            "evaluate": timings.get("evaluate_s"), "score": timings.get("score_s")}
    return CellCost(
        inference=inference, build=phases["build"], scoring=phases["scoring"],
        documents=documents,
        inference_flops_per_document=inference.flops // documents if documents else None,
        wall_s={k: float(v) for k, v in wall.items() if v is not None},
        peak_memory_bytes=memory, peak_memory_kind=kind,
        trainable_parameters=report.trainable_params, total_parameters=report.total_params,
        training_tokens=report.train_tokens, training_flops=report.train_flops,
        fit_cached=report.fit_cached)
