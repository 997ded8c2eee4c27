"""B6 — end-to-end speedup: 16 tasks whose agent (the fake agent) sleeps 2 s and writes one file, at `parallel` 8,
against the same plan at `parallel` 1 in the same run (`--quick`: 0.5 s sleeps). Both through `orchard.run`, each
on a fresh small repository; wall time around the whole call (run set-up and tidy-up included).
"""

from __future__ import annotations

import time
from typing import Any

import orchard
from benchmarks.common import (
    Config,
    EventLog,
    Result,
    Stopwatch,
    Target,
    phases,
    scratch,
    sleepy_plan,
    small_repo,
    timeline,
)
from orchard.core.model import Plan

TASKS = 16
PARALLEL = 8


def timed_run(plan: Plan, parallel: int, name: str) -> tuple[Stopwatch, dict[str, Any]]:
    with scratch(f"b6-p{parallel}") as tmp:
        repo = small_repo(tmp / name)
        events = EventLog()
        called = time.time()
        with Stopwatch() as sw:
            result = orchard.run(plan, repo=repo, parallel=parallel, on_event=events)
        returned = time.time()
        if result.status != "completed":
            raise RuntimeError(f"parallel {parallel} run ended {result.status}")
    attempts = [e["duration_s"] for e in events.of("attempt.finished")]
    return sw, {"wall_s": sw.wall, "summary_speedup": result.summary.get("speedup"),
                "mean_attempt_s": sum(attempts) / len(attempts), **timeline(events.events, called, returned),
                "phases": phases(events.events)}


def run(cfg: Config) -> list[Result]:
    sleep_s = 0.5 if cfg.quick else 2.0
    plan = sleepy_plan(sleep_s, tasks=TASKS, parallel=PARALLEL, prefix="s", source="<b6>")
    with scratch("b6-warm-up") as tmp:  # one-time costs of a first run in this process stay out of both figures
        orchard.run(Plan.build(plan.tasks[:1], plan.agents, source="<b6 warm-up>"), repo=small_repo(tmp / "r"))
    cfg.say(f"  B6: {TASKS} × {sleep_s:g} s tasks at parallel {PARALLEL} …")
    wide, wide_info = timed_run(plan, PARALLEL, "wide")
    cfg.say(f"  B6: the same at parallel 1 (~{TASKS * sleep_s:.0f} s) …")
    narrow, narrow_info = timed_run(plan, 1, "narrow")
    rounds = TASKS // PARALLEL
    details = {
        "sleep_s": sleep_s, "tasks": TASKS, f"parallel_{PARALLEL}": wide_info, "parallel_1": narrow_info,
        "overhead_per_task_sequential_s": (narrow.wall - TASKS * sleep_s) / TASKS,
        "overhead_beyond_ideal_parallel_s": wide.wall - rounds * sleep_s,
        "ideal_parallel_wall_s": rounds * sleep_s,
    }
    notes = ["measured: wall at parallel 8; baseline: wall at parallel 1; ratio: speedup (baseline / measured)"]
    if cfg.quick:
        notes.append("--quick: 0.5 s sleeps, not 2 s (overheads weigh 4× more)")
    return [Result("B6", f"end-to-end speedup: {TASKS} × {sleep_s:g} s tasks, parallel {PARALLEL} vs 1",
                   measured=wide.wall, baseline=narrow.wall, ratio=narrow.wall / wide.wall,
                   target=Target(">=", 7.0), details=details, notes=notes)]
