"""Descriptors that plugins hand to the host: what a method is, what a task is.

Everything here is plain data plus callables. Importing this module must stay cheap
(no torch, no transformers, no lm-eval): `harness list` and report generation load every
plugin's descriptors and nothing heavier.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import (TYPE_CHECKING, Any, Callable, Literal, Mapping, Protocol, Sequence,
                    runtime_checkable)

from harness.contract.reports import MethodReport, ScoreDetails
from harness.errors import UsageError
from harness.settings import DataSource
from harness.settings import cache_root as default_cache_root

if TYPE_CHECKING:  # heavy types only for annotations
    from lm_eval.api.model import LM

    from harness.results.store import Store


class Capability(str, enum.Enum):
    """What an lm-eval `LM` built by a method can answer."""

    LOGLIKELIHOOD = "loglikelihood"
    GENERATION = "generate_until"
    VISION = "vision"

    def __str__(self) -> str:
        return self.value


TEXT_CAPABILITIES = frozenset({Capability.LOGLIKELIHOOD, Capability.GENERATION})


@dataclass(frozen=True)
class NoOptions:
    """Config dataclass for plugins that take no options."""


def at_least(options: Any, **minimums: float) -> None:
    """For an options dataclass's `__post_init__`: each named field must be at least its
    minimum (None passes: it means "not set")."""
    for name, minimum in minimums.items():
        value = getattr(options, name)
        if value is not None and value < minimum:
            raise ValueError(f"{name} must be at least {minimum}, got {value}")


@dataclass(frozen=True)
class ModelRef:
    """One base model: a Hugging Face id, a local directory or a zoo name, plus revision,
    dtype and device (`harness.models.loading` resolves and loads it)."""

    id: str
    revision: str = "main"
    dtype: str = "auto"
    device: str = "cpu"

    @classmethod
    def parse(cls, text: str, device: str = "cpu", dtype: str = "auto") -> "ModelRef":
        """`org/name`, `org/name@revision`, `/local/dir` or `harness-zoo/tiny-llama`."""
        text = text.strip()
        if not text:
            raise UsageError("empty model reference")
        model_id, _, revision = text.partition("@")
        return cls(id=model_id, revision=revision or "main", dtype=dtype, device=device)

    @property
    def short_name(self) -> str:
        return Path(self.id.rstrip("/")).name

    @property
    def resolved_dtype(self) -> str:
        """"auto" is bfloat16 on a GPU and float32 elsewhere, decided by this model's device."""
        if self.dtype != "auto":
            return self.dtype
        return "bfloat16" if self.device.startswith("cuda") else "float32"


@dataclass(frozen=True)
class ModelSlots:
    """How many base models a method composes, and what the roles are called."""

    kind: Literal["one", "pack", "anchor+augmenting"]
    minimum: int
    maximum: int | None

    def accepts(self, count: int) -> bool:
        return count >= self.minimum and (self.maximum is None or count <= self.maximum)

    def describe(self) -> str:
        if self.kind == "one":
            return "1 model"
        if self.kind == "pack":
            if self.maximum == self.minimum:
                return f"pack of {self.minimum} models"
            return f"pack of >= {self.minimum} models"
        return "anchor + augmenting model"


ONE_MODEL = ModelSlots("one", 1, 1)
MODEL_PACK = ModelSlots("pack", 2, None)
ANCHOR_AUGMENTING = ModelSlots("anchor+augmenting", 2, 2)


@dataclass(frozen=True)
class Training:
    """A method that fits parameters before it is evaluated.

    `data` says on what: "task-train" fits on the task's own training split; any other
    value names the kind of dataset the user points `training_data` at (e.g. "alpaca-json").
    """

    data: str = "task-train"
    description: str = ""


@dataclass
class BuildContext:
    """Everything a method's `build` receives to construct its lm-eval `LM`.

    models: the resolved base models, in the method's order (`ModelRef`: id, revision,
        dtype, device; load them with `load_causal_lm` / `load_vision_lm`).
    options: the method's options dataclass, validated.
    task, task_options: the task this LM will be evaluated on (a training method reads
        its training examples through them).
    seed, device, batch_size, prefix_cache: the run's settings.
    workdir: private scratch folder of this cell (lm-eval's response cache, checkpoints);
        deleted once the cell's result is committed.
    data: where the task's documents come from (hf, local files or the embedded sample).
    method_code: the method's version and providing distribution; fit caches key on it.
    cache_root: where long-lived caches (zoo models, fitted adapters) live.
    report: the `MethodReport` the method fills (parameter counts, which leaderboards
        plot, and method-specific facts such as fusion weights or discovered prompts);
        saved as the cell's `method_report`.
    """

    models: Sequence["ModelRef"]
    options: Any
    task: "TaskSpec"
    task_options: Any
    seed: int
    device: str
    batch_size: int | str  # a number, or "auto" (see harness.lm.batch_backoff)
    workdir: Path
    data: "DataSource"
    method_code: dict[str, str] = field(default_factory=dict)
    cache_root: Path = field(default_factory=default_cache_root)
    report: MethodReport = field(default_factory=MethodReport)
    prefix_cache: bool = True  # share prompt prefixes' KV caches (harness.lm._prefix_cache)


@runtime_checkable
class HarnessLM(Protocol):
    """An lm-eval `LM` that also talks to the host (PackLLM's pack, FUSE's captioner); a
    method's `build` may return one instead of a plain `LM`.

    begin_cell: the host reuses this LM for the next task of its row (a `MethodSpec` with
        `reuse_across_tasks`): per-cell state (records, `ctx.report`) starts afresh.
    sample_annotations: what the method recorded for one of lm-eval's per-sample logs
        (PackLLM's weights per token): merged into the stored sample and shown by the
        leaderboard's explorer.
    """

    def begin_cell(self, ctx: BuildContext) -> None: ...

    def sample_annotations(self, sample: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class MethodSpec:
    """A method plugin: builds an lm-eval `LM` from resolved base models.

    `build` must do its heavy imports inside its body so that listing plugins stays
    torch-free.
    """

    name: str
    description: str
    build: Callable[[BuildContext], "LM"]
    capabilities: frozenset[Capability] = TEXT_CAPABILITIES
    models: ModelSlots = ONE_MODEL
    options: type = NoOptions
    default_models: tuple[str, ...] = ("harness-zoo/tiny-llama",)
    training: Training | None = None
    # Capabilities that depend on the base models (VISION when they are vision-language
    # checkpoints). Runs at planning time: decide from configs, never load weights.
    model_capabilities: Callable[[Sequence["ModelRef"]], frozenset[Capability]] | None = None
    # Bump when a code change can change this method's numbers: it enters every cell and
    # fit fingerprint, so results and cached fits of the old code are recomputed.
    version: str = "1"
    # A method that does not train is built once per row and its LM evaluated on every
    # task of the row (a `HarnessLM`'s `begin_cell(ctx)` resets its per-cell state).
    # False when `build` depends on the task it is given.
    reuse_across_tasks: bool = True
    # GPUs one job of this method needs; None: estimated from its models' weights.
    gpus: int | None = None

    def capabilities_for(self, models: Sequence["ModelRef"]) -> frozenset[Capability]:
        """What this method's LM can answer when built on `models`."""
        if self.model_capabilities is None or not models:
            return self.capabilities
        return self.capabilities | self.model_capabilities(models)


@dataclass(frozen=True)
class Metric:
    """A metric key as it appears in a cell's `metrics` and how to read it."""

    key: str
    label: str
    higher_is_better: bool = True


@dataclass
class TaskContext:
    """What a task's callables (`lm_eval`, `score`, `training_examples`, `preflight`)
    receive.

    options: the task's options dataclass, validated.
    data: where documents come from; `data.kind` is "hf", "local" (files in the original
        format under `data.path`) or "embedded" (the sample the plugin ships).
    workdir: scratch folder (the store's root at planning time, the cell's workdir later).
    limit, seed, device: the run's settings (a model-based scorer, such as a local judge,
        runs on `device`).
    store: the results store of this run (`store.find(task=..., row=...)` returns finished
        cells, e.g. a pairwise judge's baseline); None outside a run.
    score_details: the `ScoreDetails` that `score` fills: why a headline is unavailable,
        caveats every leaderboard shows, and facts stored beside the metrics (sacrebleu
        signatures, sandbox layers, what a `CorpusMetric` recomputes from).
    """

    options: Any
    data: DataSource
    workdir: Path
    limit: int | None
    seed: int
    store: "Store | None" = None
    device: str = "cpu"
    score_details: ScoreDetails = field(default_factory=ScoreDetails)


@dataclass
class LmEvalPlan:
    """The lm-eval side of a task: task names or config dicts plus their shared settings.

    `data_files` lists every local file the configs read; their hashes enter the cell
    fingerprint.
    """

    tasks: list[str | dict[str, Any]]
    num_fewshot: int | None = None
    include_path: list[Path] = field(default_factory=list)
    data_files: list[Path] = field(default_factory=list)
    gen_kwargs: dict[str, Any] | None = None
    confirm_run_unsafe_code: bool = False
    apply_chat_template: bool = False
    # False when every config is complete on its own: lm-eval then skips indexing its
    # thousands of stock task files (seconds per process).
    uses_stock_tasks: bool = True


Samples = list[dict[str, Any]]
MetricValues = Mapping[str, tuple[float, float | None]]  # key -> (value, stderr)


@dataclass(frozen=True)
class CorpusMetric:
    """How a metric that `TaskSpec.score` computes is recomputed on any multiset of the
    cell's documents, without a model, judge or sandbox: what paired bootstrap tests
    (harness.report.significance) resample.

    statistics(samples, score_details): one entry per document, keyed by the sample's
        `(task, doc_id)`, read from the stored samples and the cell's `ScoreDetails`
        (sufficient statistics such as n-gram counts, a judge's rating, sandbox verdicts);
        a document without a usable statistic is left out.
    value(statistics): the metric of a corpus made of these documents' statistics
        (repeats included, as a bootstrap resample draws them); None: the mean of the
        statistics, which must then be numbers (0/1 ones get an exact McNemar test).
    summed: the statistics are integer rows `[group, *counts]` (sacrebleu's n-gram counts,
        group = the translation direction) and `value` receives the per-group sums of the
        counts as a (groups x counts) array: resampling then weights rows instead of
        copying them, fast enough for 20,000 sentences.
    """

    key: str
    statistics: Callable[[Samples, ScoreDetails], Mapping[tuple[str, Any], Any]]
    value: Callable[[Sequence[Any]], float] | None = None
    summed: bool = False


@dataclass(frozen=True)
class TaskSpec:
    """A task plugin: data, how lm-eval evaluates it, and which number leads.

    `lm_eval` returns the lm-eval plan for one run. `score`, when given, computes corpus
    metrics from the merged per-sample logs (BLEU, CIDEr, pass@k, judge scores); without
    it the host averages lm-eval's per-sample metrics.

    `corpus_metrics` recompute `score`'s metrics on resampled documents for paired
    significance tests (see `CorpusMetric`); a metric of `score` without one is shown
    without a test. Per-sample metrics averaged by the host need none.
    """

    name: str
    description: str
    headline: Metric
    lm_eval: Callable[[TaskContext], LmEvalPlan]
    requires: frozenset[Capability] = frozenset({Capability.LOGLIKELIHOOD})
    hf_dataset: str = ""
    local_format: str = ""
    embedded_data: Path | None = None
    options: type = NoOptions
    metrics: tuple[Metric, ...] = ()
    score: Callable[[Samples, TaskContext], MetricValues] | None = None
    corpus_metrics: tuple[CorpusMetric, ...] = ()
    training_examples: Callable[[TaskContext], list[dict[str, str]]] | None = None
    # Held-out examples a fit may select on (early stopping), never scored.
    validation_examples: Callable[[TaskContext], list[dict[str, str]]] | None = None
    # A check run at planning time, before any model loads; returns a reason to refuse.
    preflight: Callable[[TaskContext], str | None] | None = None
    # Bump when a code change can change this task's numbers (prompts, scoring, data
    # handling): it enters every cell fingerprint.
    version: str = "1"
    # The documents are generated from the task's options and seed, the same in every data
    # mode: results record the data as "generated", not as a smoke-test sample.
    generated_data: bool = False


def options_to_dict(options: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return dataclasses.asdict(options)
    return {}
