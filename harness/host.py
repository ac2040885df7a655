"""The pluggy host: discovers plugins and collects their methods, tasks and writers.

Three kinds of plugin, loaded in this order (pytest's default plugins are the model):
the host's own leaderboard writers and executors (`HOST_PLUGINS`: part of the host, never
blocked), the built-in methods and tasks (`BUILTIN_PLUGINS`: blocked with `-p no:NAME`), and
third-party plugins from the `harness` entry-point group (blocked with `-p no:NAME`, all of
them with `HARNESS_DISABLE_PLUGIN_AUTOLOAD=1`) or named with `-p module`.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.metadata as md
import importlib.util
import os
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pluggy

from harness import __version__, hookspecs
from harness.contract import MethodSpec, ReportWriter, TaskSpec
from harness.errors import HarnessError, UsageError, did_you_mean
from harness.results.records import CodeInfo

ENTRY_POINT_GROUP = "harness"
BUILTIN_DISTRIBUTION = "harness"
AUTOLOAD_OFF = "HARNESS_DISABLE_PLUGIN_AUTOLOAD"
EXTRA_PLUGINS = "HARNESS_PLUGINS"
# The host's own plugins: leaderboard writers and executors, never blocked by a switch.
HOST_PLUGINS = ("harness.report.writers", "harness.run.executors.registry")
# Built-in methods (plugins/NAME) and tasks (tasks/NAME), each registered as NAME.
BUILTIN_PLUGINS = (
    "harness.plugins.single", "harness.plugins.packllm", "harness.plugins.ensemble",
    "harness.plugins.top1_ppl", "harness.plugins.dexperts", "harness.plugins.merge",
    "harness.plugins.aligner", "harness.plugins.adalink", "harness.plugins.lora",
    "harness.plugins.prompt_tuning", "harness.plugins.llama_adapter", "harness.plugins.full_ft",
    "harness.plugins.fuse", "harness.plugins.fuse_prompt", "harness.plugins.calm",
    "harness.tasks.mmlu", "harness.tasks.gsm8k", "harness.tasks.coco_captioning",
    "harness.tasks.vicuna_bench", "harness.tasks.flores", "harness.tasks.humaneval",
    "harness.tasks.mixed_domains", "harness.tasks.kv_arithmetic", "harness.tasks.scene_vqa",
)
# What a plugin's source hash covers: code and the configs shipped beside it.
SOURCE_SUFFIXES = (".py", ".yaml", ".yml", ".jinja")


@dataclass
class Host:
    """Loaded plugins and what they contributed, with where each came from."""

    pm: pluggy.PluginManager
    methods: dict[str, MethodSpec] = field(default_factory=dict)
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # plugin name -> origin text
    distributions: dict[str, str] = field(default_factory=dict)  # plugin -> "name version"
    provided_by: dict[str, str] = field(default_factory=dict)  # method/task name -> plugin

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook

    def method(self, name: str) -> MethodSpec:
        if name not in self.methods:
            raise UsageError(f"unknown method {name!r}{did_you_mean(name, self.methods)}; "
                             f"known: {', '.join(sorted(self.methods))}")
        return self.methods[name]

    def task(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            raise UsageError(f"unknown task {name!r}{did_you_mean(name, self.tasks)}; "
                             f"known: {', '.join(sorted(self.tasks))}")
        return self.tasks[name]

    def origin_of(self, name: str) -> str:
        return self.origins.get(self.provided_by.get(name, ""), "?")

    def code_of(self, spec: MethodSpec | TaskSpec) -> CodeInfo:
        """The version, distribution and source hash of the code behind a method or task."""
        plugin = self.provided_by.get(spec.name, "?")
        entry = spec.build if isinstance(spec, MethodSpec) else spec.lm_eval
        return CodeInfo(plugin=plugin, version=spec.version,
                        distribution=self.distributions.get(plugin, "unknown"),
                        source_sha256=source_digest(getattr(entry, "__module__", "")))

    def report_writers(self) -> list[ReportWriter]:
        return [w for writers in self.pm.hook.harness_report_writers() for w in writers]


def _plugin_switches(switches: Iterable[str]) -> tuple[list[str], set[str]]:
    extra, blocked = [], set()
    for switch in switches:
        if switch.startswith("no:"):
            blocked.add(switch[3:])
        else:
            extra.append(switch)
    return extra, blocked


def load_host(switches: Iterable[str] = ()) -> Host:
    """Load every `harness` entry point (unless blocked) plus `-p` modules, then validate.

    switches: pytest-style `-p` values, "module.path" to load or "no:name" to block.
    """
    pm = pluggy.PluginManager("harness")
    pm.add_hookspecs(hookspecs)
    env_extra = [s for s in os.environ.get(EXTRA_PLUGINS, "").split(",") if s.strip()]
    extra, blocked = _plugin_switches([*env_extra, *switches])
    entry_points = sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    known = [*(m.rsplit(".", 1)[1] for m in BUILTIN_PLUGINS), *(e.name for e in entry_points),
             *extra]
    for name in sorted(blocked):
        if name in HOST_PLUGINS:
            raise UsageError(f"-p no:{name}: the host's own plugins (its leaderboard writers "
                             f"and executors) cannot be blocked")
        if name not in known:
            raise UsageError(f"-p no:{name}: no plugin is called {name!r}"
                             f"{did_you_mean(name, known)}; plugins: {', '.join(known)}")
        pm.set_blocked(name)
    host = Host(pm)

    builtin = f"{BUILTIN_DISTRIBUTION} {__version__}"
    for module in HOST_PLUGINS:
        _register(host, module, "built-in", functools.partial(importlib.import_module, module),
                  module, builtin)
    for module in BUILTIN_PLUGINS:
        name = module.rsplit(".", 1)[1]
        if not pm.is_blocked(name):
            _register(host, name, "built-in", functools.partial(importlib.import_module, module),
                      module, builtin)
    if not os.environ.get(AUTOLOAD_OFF):
        for entry_point in entry_points:
            if pm.is_blocked(entry_point.name) or pm.has_plugin(entry_point.name):
                continue
            dist = entry_point.dist
            distribution = f"{dist.name} {dist.version}" if dist else "unknown"
            _register(host, entry_point.name, distribution, entry_point.load, entry_point.value,
                      distribution)
    if extra and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # `-p mymodule` finds mymodule.py here, as `python -m` does
    for module_name in extra:
        if pm.is_blocked(module_name) or pm.has_plugin(module_name):
            continue
        _register(host, module_name, f"-p {module_name}",
                  functools.partial(importlib.import_module, module_name), module_name,
                  _distribution_of_module(module_name))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise HarnessError(f"plugin {exc.plugin!r} implements an unknown hook: "
                           f"{str(exc).splitlines()[0]}") from exc
    _collect(host)
    return host


def _register(host: Host, name: str, origin: str, load: Callable[[], Any], target: str,
              distribution: str) -> None:
    try:
        plugin = load()
    except Exception as exc:
        raise HarnessError(f"plugin {name!r} ({target}, {origin}) failed to import: "
                           f"{type(exc).__name__}: {exc}") from exc
    if host.pm.is_registered(plugin):  # `-p` naming a module an entry point already loaded
        return
    try:
        host.pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise HarnessError(f"plugin {name!r} ({origin}) is invalid: {exc}") from exc
    host.origins[name] = origin
    host.distributions[name] = distribution


def _distribution_of_module(module_name: str) -> str:
    """"name version" of the installed distribution providing a `-p` module, else "local"."""
    top = module_name.split(".")[0]
    if not _installed(top):  # mapping every distribution's files takes over a second
        return "local"
    for dist_name in _packages_distributions().get(top, []):
        try:
            return f"{dist_name} {md.version(dist_name)}"
        except md.PackageNotFoundError:
            continue
    return "local"


def _installed(top_level: str) -> bool:
    """Whether a module is found under an installation's site-packages."""
    spec = importlib.util.find_spec(top_level)
    origin = spec.origin if spec and spec.origin else None
    locations = spec.submodule_search_locations if spec else None
    paths = [Path(origin)] if origin and origin != "built-in" else []
    paths += [Path(p) for p in locations or []]
    sites = {Path(p) for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])}
    return any(site in path.parents for path in paths for site in sites)


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> Mapping[str, list[str]]:
    return md.packages_distributions()


# The harness's toolkits: a plugin's code digest covers each one it reaches through its
# imports (through `harness.api` too), so editing a toolkit changes the fingerprints of
# exactly the cells whose code imports it. The host's own modules are not listed: a change
# there is a new harness version, which every fingerprint already carries.
TOOLKITS = ("harness.fusion", "harness.fuse", "harness.training", "harness.zoo",
            "harness.isolation", "harness.judge", "harness.lm", "harness.data", "harness.stats",
            "harness.models")
PUBLIC_SURFACE = "harness.api"


@functools.lru_cache(maxsize=None)
def source_digest(module_name: str) -> str:
    """sha256 over a plugin's code: its package folder (code and shipped configs) when the
    module is a package, else its one file, and the source of every toolkit it reaches."""
    module = sys.modules.get(module_name)
    origin = getattr(module, "__file__", None)
    if not origin:
        return "unknown"
    path = Path(origin)
    own = _source_files(path.parent) if path.name == "__init__.py" else [path]
    digest = hashlib.sha256()
    for file in own:
        digest.update(str(file.relative_to(path.parent)).encode())
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    for toolkit in sorted(_toolkits_reached(tuple(own))):
        files = _toolkit_files(toolkit)
        for file in files:
            digest.update(f"{toolkit}:{file.relative_to(files[0].parent)}".encode())
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def _source_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in SOURCE_SUFFIXES
                  and "__pycache__" not in p.parts)


def _toolkit_files(toolkit: str) -> list[Path]:
    """A toolkit's source files, its `__init__.py` (or its one file) first."""
    spec = importlib.util.find_spec(toolkit)
    assert spec is not None and spec.origin is not None, toolkit
    origin = Path(spec.origin)
    if origin.name != "__init__.py":
        return [origin]
    return [origin, *(p for p in _source_files(origin.parent) if p != origin)]


def _toolkits_reached(files: tuple[Path, ...]) -> set[str]:
    """The toolkits the files import, and the toolkits those import, transitively."""
    reached: set[str] = set()
    pending = [file for file in files if file.suffix == ".py"]
    while pending:
        for toolkit in _toolkits_imported(pending.pop()) - reached:
            reached.add(toolkit)
            pending += [file for file in _toolkit_files(toolkit) if file.suffix == ".py"]
    return reached


def _toolkits_imported(file: Path) -> set[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(file.read_bytes(), str(file))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == PUBLIC_SURFACE:  # each name at the module that defines it
                names += [_api_sources().get(alias.name, "") for alias in node.names]
            else:
                names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return {toolkit for name in names for toolkit in TOOLKITS
            if name == toolkit or name.startswith(toolkit + ".")}


@functools.lru_cache(maxsize=1)
def _api_sources() -> dict[str, str]:
    """Each name `harness.api` re-exports -> the module it comes from."""
    spec = importlib.util.find_spec(PUBLIC_SURFACE)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_bytes())
    return {alias.asname or alias.name: node.module for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.module for alias in node.names}


def _collect(host: Host) -> None:
    for kind, hook, table, spec_type in (
            ("method", host.pm.hook.harness_methods, host.methods, MethodSpec),
            ("task", host.pm.hook.harness_tasks, host.tasks, TaskSpec)):
        for impl in hook.get_hookimpls():
            try:
                specs = impl.function() or []
            except Exception as exc:
                raise HarnessError(f"plugin {impl.plugin_name!r} failed listing its {kind}s: "
                                   f"{type(exc).__name__}: {exc}") from exc
            if not isinstance(specs, (list, tuple)):
                raise HarnessError(f"plugin {impl.plugin_name!r}: harness_{kind}s must return a "
                                   f"list of {spec_type.__name__}, got {type(specs).__name__}")
            for spec in specs:
                problem = _spec_problem(spec, spec_type)
                if problem:
                    raise HarnessError(f"plugin {impl.plugin_name!r}: invalid {kind} "
                                       f"{getattr(spec, 'name', spec)!r}: {problem}")
                if spec.name in table:
                    raise HarnessError(
                        f"{kind} {spec.name!r} is provided twice: by plugin "
                        f"{host.provided_by[spec.name]!r} and by {impl.plugin_name!r}")
                table[spec.name] = spec
                host.provided_by[spec.name] = impl.plugin_name


def _spec_problem(spec: Any, spec_type: type) -> str | None:
    """What is wrong with a plugin's descriptor, checked at load so a bad plugin fails with
    its name instead of deep inside a run."""
    import dataclasses

    if not isinstance(spec, (MethodSpec, TaskSpec)) or not isinstance(spec, spec_type):
        return f"expected a {spec_type.__name__}, got {type(spec).__name__}"
    if not isinstance(spec.name, str) or not spec.name.isidentifier():
        return "the name must be an identifier (letters, digits, underscores)"
    if not isinstance(spec.version, str) or not spec.version:
        return "version must be a non-empty string"
    if not (isinstance(spec.options, type) and dataclasses.is_dataclass(spec.options)):
        return "options must be a dataclass"
    required = [f.name for f in dataclasses.fields(spec.options)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        return f"every option needs a default ({', '.join(required)} has none)"
    entry = spec.build if isinstance(spec, MethodSpec) else spec.lm_eval
    if not callable(entry):
        return f"{'build' if isinstance(spec, MethodSpec) else 'lm_eval'} must be callable"
    if isinstance(spec, MethodSpec) and not spec.default_models:
        return "default_models must name at least one model"
    return None
