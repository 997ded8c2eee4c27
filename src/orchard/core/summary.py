"""The end-of-run figures: counts by status, wall time, work time, speedup against sequential, cost (also per
agent). Pure: computed from a run's records and the time it is now."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchard.core.events import TaskWarning
from orchard.core.gate_state import STARTED, gate_figures
from orchard.core.journal import Records
from orchard.core.model import TaskStatus
from orchard.core.records import AttemptRecord


def summarize(records: Records, run_id: str, now: float) -> dict[str, Any]:
    """Figures for one run, from its records alone (works for finished, live and interrupted runs)."""
    run = records.run(run_id)
    tasks = records.tasks(run_id)
    attempts = records.attempts(run_id)
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.status.value] = counts.get(t.status.value, 0) + 1
    marks = records.event_times(run_id)
    wall = _wall(marks, run.started_at, run.finished_at, now)
    work = sum(max(0.0, (a.finished_at or now) - a.started_at) for a in attempts)
    return {
        "run_id": run_id,
        "status": run.status,
        "tasks": len(tasks),
        "counts": counts,
        "merged": counts.get(TaskStatus.MERGED.value, 0),
        "failed": sum(1 for t in tasks if t.status.own_failure),  # never blocked: that is its own count
        "blocked": counts.get(TaskStatus.BLOCKED.value, 0),
        "attempts": len(attempts),
        "wall_s": round(wall, 3),  # the sessions' own time: the time between them is not counted
        "sessions": max(1, sum(1 for kind, _ in marks if kind == "run.started")),
        "work_s": round(work, 3),
        "speedup": round(work / wall, 2) if wall > 0 else 0.0,
        "utilization": round(work / (wall * run.parallel), 3) if wall > 0 and run.parallel else 0.0,
        "cost_usd": round(sum((a.cost_usd for a in attempts), 0.0), 6),
        "tokens_in": sum(a.tokens_in for a in attempts),
        "tokens_out": sum(a.tokens_out for a in attempts),
        "parallel": run.parallel,
        "agents": _by_agent(attempts, now),
        **_setup(attempts),
        **_gate_and_warnings(records, run_id, {kind for kind, _ in marks}),
    }


def _gate_and_warnings(records: Records, run_id: str, kinds: set[str]) -> dict[str, Any]:
    """The merge gate's figures (None when it checked nothing) and the warnings on tasks' results; the events are
    read only when the run has such (the summary is taken at every run's end)."""
    events = [data for _, data in records.events(run_id)] if kinds & {STARTED, TaskWarning.type} else []
    return {"checks": gate_figures(events).as_json() if STARTED in kinds else None,
            "warnings": [{"task": e["task"], "text": e["text"], "others": e.get("others", [])}
                         for e in events if e["type"] == TaskWarning.type]}


def _setup(attempts: Sequence[AttemptRecord]) -> dict[str, Any]:
    """Environment setup: its total time, per task, and how often a reused worktree's setup was current."""
    by_task: dict[str, float] = {}
    for a in attempts:
        if a.setup_s is not None:
            by_task[a.task_id] = round(by_task.get(a.task_id, 0.0) + a.setup_s, 3)
    return {"setup_s": round(sum(by_task.values()), 3), "setup_by_task": by_task,
            "setups": sum(1 for a in attempts if a.setup_s is not None and not a.setup_skipped),
            "setups_skipped": sum(1 for a in attempts if a.setup_skipped)}


def _by_agent(attempts: Sequence[AttemptRecord], now: float) -> dict[str, dict[str, float | int]]:
    """Attempts, busy seconds, tokens and cost per agent entry."""
    out: dict[str, dict[str, float | int]] = {}
    for a in attempts:
        row = out.setdefault(a.agent, {"attempts": 0, "work_s": 0.0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0})
        row["attempts"] += 1
        row["work_s"] = round(row["work_s"] + max(0.0, (a.finished_at or now) - a.started_at), 3)
        row["tokens_in"] += a.tokens_in
        row["tokens_out"] += a.tokens_out
        row["cost_usd"] = round(row["cost_usd"] + a.cost_usd, 6)
    return out


def _wall(marks: Sequence[tuple[str, float]], started_at: float, finished_at: float | None, now: float) -> float:
    """The time the run was running: the sum of its sessions, so a `retry` a day later adds its own minutes,
    not the day in between. A session that ended without `run.finished` (a crash) ends at its last event."""
    if not any(kind == "run.started" for kind, _ in marks):  # no journal: first start to last finish
        return max(0.0, (finished_at or now) - started_at)
    total, start, last = 0.0, None, 0.0
    for kind, ts in marks:
        if kind == "run.started":
            if start is not None:
                total += last - start
            start = ts
        elif kind == "run.finished" and start is not None:
            total += ts - start
            start = None
        last = ts
    if start is not None:  # the current session (live, or finishing: `finished_at` is set just before the event)
        total += (finished_at if finished_at and finished_at >= start else now) - start
    return max(0.0, total)
