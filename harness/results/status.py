"""`harness status`: a running or interrupted matrix, from its files alone.

The last run's plan (plan.json), the committed cells, the failure records and the lock
files say which cells are done, running (with their holder and its heartbeat), failed
(with the reason), pending or untrusted (damaged files, recomputed by the next run). What
killed processes left is cleared first (`Store.tidy`), so a lock whose holder died never
shows its cell as running, and a finished cell's scratch folder goes. A done
cell whose method or task source differs from the installed plugin's is flagged: its
numbers came from other code.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.host import Host
from harness.results.records import CellRecord
from harness.results.store import Problem, Store

ORDER = ("running", "failed", "untrusted", "pending", "done", "n/a")


@dataclass(frozen=True)
class CellStatus:
    state: str  # one of ORDER
    label: str
    task: str
    fingerprint: str
    detail: str = ""


def _code_change(host: Host, record: CellRecord) -> str:
    changed = []
    for role, name in (("method", record.row.method), ("task", record.task.name)):
        spec = host.methods.get(name) if role == "method" else host.tasks.get(name)
        recorded = record.code.get(role)
        if spec is None or recorded is None:
            continue
        now = host.code_of(spec)
        if (now.version, now.source_sha256) != (recorded.version, recorded.source_sha256):
            changed.append(f"{role} {name} code changed since (version {recorded.version} -> "
                           f"{now.version}, source {recorded.source_sha256[:8]} -> "
                           f"{now.source_sha256[:8]})")
    return "; ".join(changed)


def matrix_status(host: Host, out: Path) -> list[CellStatus]:
    store = Store(out)
    with contextlib.suppress(OSError):  # a folder this user may only read is shown as it is
        store.tidy()  # a lock left by a killed process is no running cell
    problems: list[Problem] = []
    done = {r.fingerprint[:16]: r for r in store.results(problems)}
    failed = {r.fingerprint[:16]: r for r in store.failures(problems)}
    statuses: dict[str, CellStatus] = {}
    for entry in store.read_plan():
        fp = str(entry.get("fingerprint", ""))[:16]
        statuses[fp] = CellStatus("pending", str(entry.get("label", "?")),
                                  str(entry.get("task", "?")), fp, str(entry.get("reason", "")))
    for fp, record in failed.items():
        statuses[fp] = CellStatus("failed", record.row.label, record.task.name, fp, record.reason)
    for fp, record in done.items():
        state = "n/a" if record.status == "n/a" else "done"
        detail = record.reason if state == "n/a" else _code_change(host, record)
        statuses[fp] = CellStatus(state, record.row.label, record.task.name, fp, detail)
    for problem in problems:
        fp = problem.path.name[:16] if problem.path.is_dir() else problem.path.stem[-16:]
        known = statuses.get(fp)
        statuses[fp] = CellStatus("untrusted", known.label if known else "?",
                                  known.task if known else "?", fp, problem.reason)
    for lock in sorted((out / "locks").glob("*.lock")):
        fp, part = lock.stem[:16], lock.stem[16:]
        holder = store.holder(fp, part)
        if holder is None:
            continue
        known = statuses.get(fp)
        statuses[fp] = CellStatus("running", known.label if known else "?",
                                  known.task if known else "?", fp,
                                  f"held by {holder}" + (f" (document shard {part[1:]})"
                                                         if part else ""))
    return sorted(statuses.values(), key=lambda s: (ORDER.index(s.state), s.label, s.task))


def print_status(statuses: list[CellStatus], out: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    from harness.cli.display import terminal_console

    console = terminal_console(stderr=False)
    if not statuses:
        console.print(f"{out}: no cells yet")
        return
    styles = {"running": "cyan", "failed": "red", "untrusted": "red", "pending": "yellow",
              "done": "green", "n/a": "dim"}
    table = Table(title=f"Status of {escape(str(out))}")
    for header in ("state", "cell", "fingerprint", "detail"):
        table.add_column(header, overflow="fold")
    for status in statuses:
        style = styles[status.state]
        flagged = status.state == "done" and status.detail
        table.add_row(f"[{style}]{status.state}{'*' if flagged else ''}[/{style}]",
                      escape(f"{status.label} × {status.task}"), status.fingerprint[:12],
                      escape(status.detail))
    console.print(table)
    counts: dict[str, Any] = {state: sum(s.state == state for s in statuses) for state in ORDER}
    console.print(", ".join(f"{n} {state}" for state, n in counts.items() if n)
                  + ("; * computed by code that has changed since" if any(
                      s.state == "done" and s.detail for s in statuses) else ""))
