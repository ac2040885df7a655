"""What a run asks for, resolved: suite files (a path or a built-in name) read and checked
like `-o` options, and a request's method, task and setting entries turned into the
matrix's rows, columns and run settings. The CLI and every executor's workers resolve
requests here."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UsageError
from harness.host import Host
from harness.options import build_options
from harness.settings import SETTING_NAMES, RunRequest, RunSettings, SuiteMethod, SuiteTask

SUITE_ONLY_KEYS = ("suite", "description", "methods", "tasks")


NAME_LISTS = frozenset({"models", "tasks"})  # keys of a suite's method entries that list names


def load_suite(ref: str) -> RunRequest:
    """A suite file (path or built-in name), every entry validated like `-o` options."""
    path = Path(ref)
    if not path.is_file():
        builtin = resources.files("harness.suites") / f"{ref}.yaml"
        if not builtin.is_file():
            names = sorted(p.name.removesuffix(".yaml")
                           for p in resources.files("harness.suites").iterdir()
                           if p.name.endswith(".yaml"))
            raise UsageError(f"no suite file {ref!r} and no built-in suite of that name "
                             f"(built-in: {', '.join(names)})")
        text = builtin.read_text(encoding="utf-8")
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"suite {ref}: unreadable ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"suite {ref}: malformed YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"suite {ref}: expected a mapping with methods and tasks")
    allowed = (*SUITE_ONLY_KEYS, *SETTING_NAMES)
    unknown = sorted(set(map(str, data)) - set(allowed))
    if unknown:
        raise UsageError(f"suite {ref}: unknown key(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(sorted(allowed))}")
    settings = {k: data[k] for k in SETTING_NAMES if k in data}
    build_options(RunSettings, settings, f"suite {ref}")  # bad values fail here, by name
    return RunRequest(_suite_entries(ref, data, "methods", "method", SuiteMethod),
                      _suite_entries(ref, data, "tasks", "task", SuiteTask), settings)


def _suite_entries(ref: str, data: dict[str, Any], key: str, name_key: str,
                   entry_type: type) -> list[Any]:
    items = data.get(key) or []
    if not isinstance(items, list):
        raise UsageError(f"suite {ref}: {key} must be a list")
    entries = []
    for number, item in enumerate(items, 1):
        item = {name_key: item} if isinstance(item, str) else item
        if not isinstance(item, dict) or not isinstance(item.get(name_key), str):
            found = item.get(name_key, item) if isinstance(item, dict) else item
            raise UsageError(f"suite {ref}: {key} entry {number} needs a {name_key!r} name, "
                             f"found {found!r}")
        lists = sorted(NAME_LISTS.intersection(item)) if entry_type is SuiteMethod else []
        for names in lists:  # names, never numbers read as names
            value = item[names]
            if not (isinstance(value, str) or isinstance(value, list) and
                    all(isinstance(v, str) for v in value)):
                raise UsageError(f"suite {ref}: {key} entry {item[name_key]!r}: {names} must be "
                                 f"a list of names, found {value!r}")
        entries.append(build_options(entry_type, {k: ({} if v is None and k == "options" else v)
                                                  for k, v in item.items()},
                                     f"suite {ref}: {key} entry {item[name_key]!r}"))
    return entries


def resolve(host: Host, request: RunRequest) -> tuple[list[Any], list[Any], RunSettings]:
    from harness.contract import MethodRow, TaskColumn
    from harness.models.loading import ModelRef

    settings = build_options(RunSettings, request.settings, "run settings").resolved()
    rows = []
    for entry in request.methods:
        spec = host.method(entry.method)
        model_ids = entry.models or spec.default_models
        models = tuple(ModelRef.parse(m, device=settings.torch_device, dtype=settings.dtype)
                       for m in model_ids)
        options = build_options(spec.options, entry.options, f"method {spec.name!r}")
        for name in entry.tasks:
            host.task(name)  # unknown names fail here, with a suggestion
        rows.append(MethodRow(spec, models, options, entry.label, tuple(entry.tasks)))
    columns = []
    for task_entry in request.tasks:
        task_spec = host.task(task_entry.task)
        columns.append(TaskColumn(task_spec, build_options(task_spec.options, task_entry.options,
                                                           f"task {task_spec.name!r}")))
    return rows, columns, settings
