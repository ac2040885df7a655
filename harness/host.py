"""The pluggy host: discovers plugins and collects their methods, tasks and writers."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from dataclasses import dataclass, field
from typing import Iterable

import pluggy

from harness import hookspecs
from harness.errors import HarnessError, UsageError, did_you_mean
from harness.hookspecs import ReportWriter
from harness.specs import MethodSpec, TaskSpec

ENTRY_POINT_GROUP = "harness"
BUILTIN_DISTRIBUTION = "harness"
AUTOLOAD_OFF = "HARNESS_DISABLE_PLUGIN_AUTOLOAD"
EXTRA_PLUGINS = "HARNESS_PLUGINS"


@dataclass
class Host:
    """Loaded plugins and what they contributed, with where each came from."""

    pm: pluggy.PluginManager
    methods: dict[str, MethodSpec] = field(default_factory=dict)
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # plugin name -> origin text
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
    for name in blocked:
        pm.set_blocked(name)
    host = Host(pm)

    if not os.environ.get(AUTOLOAD_OFF):
        for entry_point in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if pm.is_blocked(entry_point.name) or pm.has_plugin(entry_point.name):
                continue
            dist = entry_point.dist
            origin = ("built-in" if dist is None or dist.name == BUILTIN_DISTRIBUTION
                      else f"{dist.name} {dist.version}")
            _register(host, entry_point.name, origin, entry_point.load, entry_point.value)
    for module_name in extra:
        if pm.is_blocked(module_name) or pm.has_plugin(module_name):
            continue
        _register(host, module_name, f"-p {module_name}",
                  lambda m=module_name: importlib.import_module(m), module_name)

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise HarnessError(f"plugin {exc.plugin!r} implements an unknown hook: "
                           f"{str(exc).splitlines()[0]}") from exc
    _collect(host)
    return host


def _register(host: Host, name: str, origin: str, load, target: str) -> None:
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


def _collect(host: Host) -> None:
    for kind, hook, table in (("method", host.pm.hook.harness_methods, host.methods),
                              ("task", host.pm.hook.harness_tasks, host.tasks)):
        for impl in hook.get_hookimpls():
            try:
                specs = impl.function() or []
            except Exception as exc:
                raise HarnessError(f"plugin {impl.plugin_name!r} failed listing its {kind}s: "
                                   f"{type(exc).__name__}: {exc}") from exc
            for spec in specs:
                if spec.name in table:
                    raise HarnessError(
                        f"{kind} {spec.name!r} is provided twice: by plugin "
                        f"{host.provided_by[spec.name]!r} and by {impl.plugin_name!r}")
                table[spec.name] = spec
                host.provided_by[spec.name] = impl.plugin_name
