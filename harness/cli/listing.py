"""`harness list`: the loaded methods and tasks, one line each, or one plugin in full."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import Any

from harness.errors import UsageError, did_you_mean
from harness.host import Host
from harness.options import option_infos


def _plugin_entry(host: Host, spec: Any) -> dict[str, Any]:
    from harness.contract import MethodSpec

    options = [{"name": o.name, "type": o.type, "default": o.default, "help": o.help}
               for o in option_infos(spec.options)]
    entry: dict[str, Any] = {"name": spec.name, "origin": host.origin_of(spec.name),
                             "version": spec.version, "description": spec.description,
                             "options": options}
    if isinstance(spec, MethodSpec):
        entry.update(kind="method", models=spec.models.describe(),
                     default_models=list(spec.default_models),
                     capabilities=sorted(str(c) for c in spec.capabilities),
                     model_dependent_capabilities=spec.model_capabilities is not None,
                     trains=(None if spec.training is None else
                             {"data": spec.training.data,
                              "description": spec.training.description}))
    else:
        entry.update(kind="task", requires=sorted(str(c) for c in spec.requires),
                     headline={"key": spec.headline.key, "label": spec.headline.label,
                               "higher_is_better": spec.headline.higher_is_better},
                     metrics=[m.key for m in spec.metrics],
                     data={"hf": spec.hf_dataset or None, "local": spec.local_format or None,
                           "embedded": str(spec.embedded_data) if spec.embedded_data else None},
                     trains_on=spec.training_examples is not None)
    return entry


def cmd_list(host: Host, args: argparse.Namespace) -> int:
    if args.name:
        spec = host.methods.get(args.name) or host.tasks.get(args.name)
        if spec is None:
            known = [*host.methods, *host.tasks]
            raise UsageError(f"no method or task named {args.name!r}"
                             f"{did_you_mean(args.name, known)}; `harness list` shows them all")
        entry = _plugin_entry(host, spec)
        if args.json:
            print(json.dumps(entry, indent=2, default=str))
        else:
            _print_plugin(entry)
        return 0
    methods = [_plugin_entry(host, s) for s in sorted(host.methods.values(), key=lambda s: s.name)]
    tasks = [_plugin_entry(host, s) for s in sorted(host.tasks.values(), key=lambda s: s.name)]
    if args.json:
        print(json.dumps({"methods": methods, "tasks": tasks}, indent=2, default=str))
        return 0
    method_rows = [(m["name"], m["models"], "trains" if m["trains"] else "frozen",
                    _with_origin(m)) for m in methods]
    task_rows = [(t["name"], f"{t['headline']['label']} {'↑' if t['headline']['higher_is_better'] else '↓'}",
                  ", ".join(t["requires"]), _with_origin(t)) for t in tasks]
    # one line per plugin, names and short facts whole (grep and cut see them); on a
    # terminal the description is cut at its edge, `harness list NAME` has the rest
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for title, rows in (("methods", method_rows), ("tasks", task_rows)):
        print(f"{title}:")
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for row in rows:
            line = "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3]
            print(line if width is None or len(line) <= width else line[:width - 1] + "…")
    if width is not None:
        print("`harness list NAME`: a method's or task's options and details")
    return 0


def _with_origin(entry: dict[str, Any]) -> str:
    origin = "" if entry["origin"] == "built-in" else f" [{entry['origin']}]"
    return entry["description"] + origin


def escape_markup(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _print_plugin(entry: dict[str, Any]) -> None:
    lines = [f"{entry['kind']} {entry['name']} (version {entry['version']}, {entry['origin']})",
             f"  {entry['description']}"]
    if entry["kind"] == "method":
        lines.append(f"  models: {entry['models']}; default: {', '.join(entry['default_models'])}")
        capabilities = ", ".join(entry["capabilities"])
        if entry["model_dependent_capabilities"]:
            capabilities += " (+ vision on vision-language models)"
        lines.append(f"  answers: {capabilities}")
        if entry["trains"]:
            lines.append(f"  trains on: {entry['trains']['data']}"
                         + (f"; {entry['trains']['description']}"
                            if entry['trains']['description'] else ""))
        else:
            lines.append("  trains: no (frozen)")
    else:
        headline = entry["headline"]
        lines.append(f"  headline: {headline['label']} ({headline['key']}, "
                     f"{'higher' if headline['higher_is_better'] else 'lower'} is better)")
        if entry["metrics"]:
            lines.append(f"  also: {', '.join(entry['metrics'])}")
        lines.append(f"  needs: {', '.join(entry['requires'])}")
        for kind, text in entry["data"].items():
            if text:
                lines.append(f"  data {kind}: {text}")
        lines.append(f"  training split: {'yes' if entry['trains_on'] else 'no'}")
    lines.append("  options:" if entry["options"] else "  options: none")
    for info in entry["options"]:
        default = json.dumps(info["default"], default=str)
        lines.append(f"    {info['name']} ({info['type']}, default {default})"
                     + (f": {info['help']}" if info["help"] else ""))
    print("\n".join(lines))
