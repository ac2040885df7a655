"""Run settings and suite entries: one dataclass each, the single source of every setting.

`RunSettings` lists every setting of a run once: its default, its help text and its type.
The command line's flags (`--limit`, `--seed`, ...), the keys a suite file may set and
their validation all come from it; `-o`/`-O` options and suite entries go through the same
options machinery (`harness.options.build_options`), so a bad value reads the same
wherever it was given.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import UsageError
from harness.options import option

DATA_DIR_VARIABLE = "HARNESS_DATA_DIR"
DEVICE_VARIABLE = "HARNESS_DEVICE"
CACHE_VARIABLE = "HARNESS_CACHE"
DEFAULT_RESULTS = "harness_out"


def cache_root() -> Path:
    """Where long-lived caches live (zoo models, fitted adapters, vocabulary maps, the
    lm-eval index, judgments): $HARNESS_CACHE, else ~/.cache/harness."""
    return Path(os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "harness")


def default_device() -> str:
    """cuda when this machine has a GPU, else cpu (a run's device: `RunSettings.resolved`)."""
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


@dataclass(frozen=True)
class DataSource:
    """Where a task's documents come from for one run.

    kind "hf": the task's Hugging Face dataset id; "local": files in the original format
    under `path`; "embedded": the small sample the task plugin ships (for smoke runs and
    the offline default, never for published numbers).
    """

    kind: Literal["hf", "local", "embedded"]
    path: Path | None = None

    def describe(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"

    @property
    def folder(self) -> Path:
        """The root of the original files (for kind "local")."""
        if self.path is None:
            raise UsageError(f"data {self.kind!r} has no folder: pass --data-dir")
        return self.path


@dataclass(frozen=True)
class RunSettings:
    """Every setting of a run (CLI flag `--name-with-dashes`, suite key `name`)."""

    data: Literal["hf", "local", "embedded"] | None = option(
        None, "hf: each task's Hugging Face dataset (default); local: the original files "
              f"under --data-dir (default when --data-dir or ${DATA_DIR_VARIABLE} is set); "
              "embedded: the small sample each task ships (offline smoke runs)")
    data_dir: str | None = option(
        None, f"root holding each task's original files (default ${DATA_DIR_VARIABLE})")
    limit: int | None = option(
        None, "documents per lm-eval task, not per harness task: MMLU runs one lm-eval task per "
              "subject, so --limit 2 evaluates up to 114 documents (smoke runs, not comparable)")
    seed: int = option(1234, "seed for sampling, few-shot order and training")
    seeds: tuple[int, ...] = option(
        (), "run every cell once per seed, e.g. 1,2,3 (replaces --seed): leaderboards show the "
            "mean and spread over seeds, and paired tests pool the documents of every seed")
    device: str | None = option(
        None, f"cpu, cuda, cuda:1 ... (default: ${DEVICE_VARIABLE}, else cuda when available)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", "model dtype; auto: bfloat16 on a GPU, float32 on the CPU")
    batch_size: int | Literal["auto"] = option(
        1, "requests per forward pass; auto: the largest that fits, halved on out-of-memory")
    prefix_cache: bool = option(
        True, "compute a prompt prefix that requests share (few-shot demonstrations) once per "
              "model and continue each request from its KV cache; false: every request runs "
              "whole (results agree within float tolerance, so cells are not recomputed)")
    doc_shards: int = option(1, "split each cell's documents over this many jobs, merged "
                                "before scoring (results do not change)")
    results: str = option(DEFAULT_RESULTS, "results root: one folder per cell, the leaderboards "
                                           "beside them (every command reads it as --results)")
    executor: str = option("local", "where jobs run: local, ray or slurm (see the README)")
    jobs: int | None = option(
        None, "jobs at once (default: one per GPU, else 1); a job is a row's tasks on one built "
              "model, or one training cell")
    gpus: tuple[str, ...] = option(
        (), "GPU ids to share out among jobs, e.g. 0,1 (default: every visible GPU when the "
            "device is cuda)")
    job_timeout: float | None = option(
        None, "seconds before a job attempt is stopped (pool, ray and slurm)")
    retries: int = option(0, "further attempts of a job that failed or timed out")
    missing_tools: Literal["fail", "skip"] = option(
        "fail", "a cell whose system tool is missing here (bubblewrap, Java): fail it, or skip: "
                "show it as not run, with the fix, without failing the run")

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be a positive integer, got {self.limit}")
        if self.batch_size != "auto" and self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {', '.join(map(str, self.seeds))}")
        if self.doc_shards < 1:
            raise ValueError(f"doc_shards must be a positive integer, got {self.doc_shards}")
        if self.data == "local" and not self.data_dir:
            raise ValueError(f"data local needs data_dir (--data-dir DIR or ${DATA_DIR_VARIABLE})")
        if self.data_dir and self.data in ("hf", "embedded"):
            raise ValueError(f"data_dir conflicts with data {self.data}")
        if self.data_dir and not Path(self.data_dir).expanduser().is_dir():
            raise ValueError(f"data_dir {self.data_dir}: no such directory")
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {self.jobs}")
        if self.retries < 0:
            raise ValueError(f"retries must be at least 0, got {self.retries}")
        if self.job_timeout is not None and self.job_timeout <= 0:
            raise ValueError(f"job_timeout must be positive, got {self.job_timeout}")
        if self.device is not None and not self.device.strip():
            raise ValueError("device must not be empty")

    def resolved(self) -> "RunSettings":
        """The settings with their run-time defaults filled in: the device ($HARNESS_DEVICE,
        else cuda when available) and the data source ($HARNESS_DATA_DIR when nothing else is
        named)."""
        data, data_dir = self.data, self.data_dir
        env_dir = os.environ.get(DATA_DIR_VARIABLE)
        if data is None and not data_dir and env_dir:
            if not Path(env_dir).expanduser().is_dir():
                raise UsageError(f"${DATA_DIR_VARIABLE}={env_dir}: no such directory")
            data_dir = env_dir
        if data is None:
            data = "local" if data_dir else "hf"
        return dataclasses.replace(self, data=data, data_dir=data_dir,
                                   device=self.device or os.environ.get(DEVICE_VARIABLE)
                                   or default_device())

    def per_seed(self) -> list["RunSettings"]:
        """One settings object per seed of the run (`seeds`, else `seed`)."""
        return [dataclasses.replace(self, seed=seed, seeds=()) for seed in self.seeds] \
            or [self]

    @property
    def torch_device(self) -> str:
        """The device models run on (the CPU until the settings are resolved)."""
        return self.device or "cpu"

    @property
    def data_source(self) -> DataSource:
        kind = self.data or "hf"
        path = Path(self.data_dir).expanduser().resolve() if self.data_dir else None
        return DataSource(kind, path if kind == "local" else None)


@dataclass(frozen=True)
class SuiteMethod:
    """A method row of a suite: `{method, models, options, label, tasks}`."""

    method: str = option(help="method name")
    models: tuple[str, ...] = option((), "base models (default: the method's own)")
    options: dict[str, Any] = option(help="method options", default_factory=dict)
    label: str = option("", "the row's name in leaderboards (default: derived)")
    tasks: tuple[str, ...] = option((), "run this row on these suite tasks only")


@dataclass(frozen=True)
class SuiteTask:
    """A task column of a suite: `{task, options}`."""

    task: str = option(help="task name")
    options: dict[str, Any] = option(help="task options", default_factory=dict)


@dataclass
class RunRequest:
    """A matrix request, from the command line or a suite file (CLI values win)."""

    methods: list[SuiteMethod] = field(default_factory=list)
    tasks: list[SuiteTask] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  # RunSettings fields given


SETTING_NAMES = tuple(f.name for f in dataclasses.fields(RunSettings))
