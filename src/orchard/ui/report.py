"""Run reports: the `status --json` contract, the status table, and the end-of-run summary.

The human views show stored text (task ids, agent names, errors an agent's output wrote) through `core.safe_text`:
its control characters made visible; the JSON document stays exact."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from orchard.core.durations import format_duration
from orchard.core.events import iso
from orchard.core.gate_state import gate_figures, task_gate
from orchard.core.journal import Records
from orchard.core.model import RunStatus, TaskStatus
from orchard.core.records import AttemptRecord
from orchard.core.safe_text import safe_line, safe_text
from orchard.core.summary import summarize
from orchard.ui.dashboard import STYLE


def status_document(records: Records, run_id: str | None = None, *, branches: Collection[str] | None = None,
                    now: float | None = None, eta: float | None = None) -> dict[str, Any]:
    """The stable `status --json` document for one run (default: the latest).

    `branches`: the branches that exist (`branch_exists` is None where unknown); `now`: the time open attempts
    count up to (default the clock; for a run whose session died, its last sign of life: see `last_seen`);
    `eta`: when a live run should end (`core.eta`), None otherwise."""
    run = records.run(run_id)
    by_task: dict[str, list[AttemptRecord]] = {}
    for attempt in records.attempts(run.id):
        by_task.setdefault(attempt.task_id, []).append(attempt)
    now = time.time() if now is None else now
    summary = summarize(records, run.id, now)
    # each task's standing at the gate, once it began a check (the plan is not read: a tampered snapshot must not
    # stop `status`)
    gate = gate_figures(data for _, data in records.events(run.id)) if summary["checks"] else None
    warnings: dict[str, list[str]] = {}
    for warning in summary["warnings"]:
        warnings.setdefault(warning["task"], []).append(warning["text"])
    tasks = []
    for t in records.tasks(run.id):
        attempts = by_task.get(t.task_id, [])
        tasks.append({
            "id": t.task_id,
            "status": t.status,
            "agent": attempts[-1].agent if attempts else t.agent,  # the one its latest attempt ran on
            "host": attempts[-1].host if attempts else None,  # the machine its latest attempt ran on
            "parent": t.parent,
            "attempts": t.attempts,
            "branch": t.branch,
            "branch_exists": (t.branch in branches) if t.branch and branches is not None else None,
            "merged_commit": t.merged_commit,
            "started_at": iso(t.started_at),
            "finished_at": iso(t.finished_at),
            "duration_s": _duration_s(attempts, now),
            "cost_usd": round(sum((a.cost_usd for a in attempts), 0.0), 6),
            "tokens_in": sum(a.tokens_in for a in attempts),
            "tokens_out": sum(a.tokens_out for a in attempts),
            "setup_s": _setup_s(attempts),
            **_reserved(attempts),
            "gate": task_gate(gate, t.task_id, t.status) if gate else None,
            "warnings": warnings.get(t.task_id, []),
            "error": t.error or None,
        })
    return {
        "run": {"id": run.id, "status": run.status, "base": run.base, "integration_branch": run.integration_branch,
                "started_at": iso(run.started_at), "finished_at": iso(run.finished_at), "held": run.held or None,
                "checks": summary["checks"], "eta": iso(eta)},
        "tasks": tasks,
        "totals": {"cost_usd": summary["cost_usd"], "tokens_in": summary["tokens_in"],
                   "tokens_out": summary["tokens_out"], "agents": summary["agents"]},
    }


def _duration_s(attempts: list[AttemptRecord], now: float) -> float | None:
    """The task's time at work: the sum of its attempts' durations (an open one up to `now`), so the time a run
    stood still between sessions is never counted; None before its first attempt."""
    if not attempts:
        return None
    return round(sum(max(0.0, (a.finished_at or now) - a.started_at) for a in attempts), 3)


def last_seen(records: Records, run_id: str) -> float | None:
    """When a run last showed a sign of life: its latest event (None without one)."""
    marks = records.event_times(run_id)
    return marks[-1][1] if marks else None


def _setup_s(attempts: list[AttemptRecord]) -> float | None:
    """The task's environment setup time over its attempts; None when none ran setup."""
    times = [a.setup_s for a in attempts if a.setup_s is not None]
    return round(sum(times), 3) if times else None


def _reserved(attempts: list[AttemptRecord]) -> dict[str, int | None]:
    """The slot and first port an attempt running now holds (`runtime.resources`); None when none runs."""
    live = [a for a in attempts if a.finished_at is None]
    return {"slot": live[-1].slot if live else None, "port": live[-1].port if live else None}


def status_table(doc: dict[str, Any]) -> RenderableType:
    """A human table of the status document."""
    run = doc["run"]
    held = f" · {run['held']}" if run.get("held") else ""
    held += f" · eta {run['eta'][11:19]} UTC" if run.get("eta") else ""
    title = Text(safe_line(f"run {run['id']} · {run['status']} · {run['integration_branch']}{held}"),
                 style="table.title")
    table = Table(title=title, title_justify="left", header_style="bold", box=None)
    for name in ("task", "status", "agent", "tries", "time", "cost", "error"):
        table.add_column(name, overflow="fold" if name == "error" else "ellipsis")
    for t in doc["tasks"]:
        table.add_row(Text(safe_line(t["id"])), Text(t["status"], style=STYLE.get(t["status"], "")),
                      Text(safe_line(t["agent"])), str(t["attempts"]),
                      format_duration(t["duration_s"]) if t["duration_s"] is not None else "",
                      f"${t['cost_usd']:.2f}" if t["cost_usd"] else "",
                      Text(safe_text(t["error"] or "")))  # Text, not markup
    return table


def summary_text(summary: dict[str, Any]) -> RenderableType:
    """The closing lines of a run: counts, wall time, speedup against sequential, utilization, cost."""
    counts = summary.get("counts", {})
    other = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s != "merged")
    lines = [
        Text.assemble(("run ", "bold"), safe_line(summary["run_id"]), " ", (summary["status"], _status_style(summary))),
        Text(f"tasks: {summary['merged']}/{summary['tasks']} merged" + (f", {other}" if other else "")
             + f" · {summary['attempts']} attempts"),
        Text(f"wall {format_duration(summary['wall_s'])}{_sessions(summary)} · "
             f"work {format_duration(summary['work_s'])} · "
             f"speedup {summary['speedup']:.2f}x vs sequential · utilization {summary['utilization'] * 100:.0f}% "
             f"of {summary['parallel']} slots"),
        Text(f"cost ${summary['cost_usd']:.4f} · tokens {summary['tokens_in']} in / {summary['tokens_out']} out"),
    ]
    if summary.get("setups") or summary.get("setups_skipped"):
        lines.append(Text(f"setup {format_duration(summary['setup_s'])} in {summary['setups']} run(s) · "
                          f"{summary['setups_skipped']} skipped (the reused worktree's setup was current)"))
    lines.extend(Text(safe_text(f"warning: {w['text']}"), style="yellow") for w in summary.get("warnings", []))
    checks = summary.get("checks")
    if checks:
        lines.append(Text(f"gate: {checks['count']} check(s), {checks['failed']} failed, "
                          f"{format_duration(checks['total_s'])} checking"))
    agents = summary.get("agents") or {}
    if len(agents) > 1 or any(a["cost_usd"] or a["tokens_in"] for a in agents.values()):
        lines.extend(Text(f"  {safe_line(name)}: {a['attempts']} attempts · ${a['cost_usd']:.4f} · "
                          f"{a['tokens_in']} in / {a['tokens_out']} out") for name, a in sorted(agents.items()))
    return Group(*lines)


def _sessions(summary: dict[str, Any]) -> str:
    """How many sessions the wall time adds up, when more than one (the time between them is not in it)."""
    sessions = summary.get("sessions", 1)
    return f" in {sessions} sessions (time between them not counted)" if sessions > 1 else ""


def _status_style(summary: dict[str, Any]) -> str:
    return {RunStatus.COMPLETED: "green", RunStatus.FAILED: "red"}.get(RunStatus(summary["status"]), "yellow")


def run_rows(store: Records) -> list[dict[str, Any]]:
    """One row per run of the store, newest first (`orchard runs`, the web dashboard)."""
    rows = []
    for run in reversed(store.runs()):
        tasks = store.tasks(run.id)
        cost = sum((a.cost_usd for a in store.attempts(run.id)), 0.0)
        rows.append({"id": run.id, "started_at": iso(run.started_at), "finished_at": iso(run.finished_at),
                     "status": str(run.status), "tasks": len(tasks),
                     "merged": sum(t.status is TaskStatus.MERGED for t in tasks), "cost_usd": round(cost, 6),
                     "plan": run.plan_source})
    return rows
