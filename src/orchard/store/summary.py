"""The end-of-run figures: counts by status, wall time, work time, speedup against sequential, cost."""

from __future__ import annotations

import time
from typing import Any

from orchard.store.store import Store


def summarize(store: Store, run_id: str) -> dict[str, Any]:
    """Figures for one run, from the store alone (works for finished, live and interrupted runs)."""
    run = store.run(run_id)
    tasks = store.tasks(run_id)
    attempts = store.attempts(run_id)
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.status] = counts.get(t.status, 0) + 1
    now = time.time()
    wall = max(0.0, (run.finished_at or now) - run.started_at)
    work = sum(max(0.0, (a.finished_at or now) - a.started_at) for a in attempts)
    return {
        "run_id": run_id,
        "status": run.status,
        "tasks": len(tasks),
        "counts": counts,
        "merged": counts.get("merged", 0),
        "failed": sum(counts.get(s, 0) for s in ("failed", "conflict", "blocked")),
        "attempts": len(attempts),
        "wall_s": round(wall, 3),
        "work_s": round(work, 3),
        "speedup": round(work / wall, 2) if wall > 0 else 0.0,
        "utilization": round(work / (wall * run.parallel), 3) if wall > 0 and run.parallel else 0.0,
        "cost_usd": round(sum(a.cost_usd for a in attempts), 6),
        "tokens_in": sum(a.tokens_in for a in attempts),
        "tokens_out": sum(a.tokens_out for a in attempts),
        "parallel": run.parallel,
    }
