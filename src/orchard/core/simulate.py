"""Run the production scheduler on a virtual clock: every attempt takes its estimate, merges are instant.

Used by `orchard plan` for the makespan estimate and by the benchmarks to measure scheduling quality.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from orchard.core.model import Outcome, Plan
from orchard.core.scheduler import (
    Action,
    AttemptEnded,
    Event,
    Kick,
    MergeEnded,
    RunDone,
    Scheduler,
    StartAttempt,
    StartMerge,
)


@dataclass(frozen=True)
class Simulation:
    """Result of a simulated run: makespan, when each task started and finished, peak concurrency."""

    makespan_s: float
    starts: Mapping[str, float]
    finishes: Mapping[str, float]
    peak_running: int
    complete: bool


def simulate(
    plan: Plan,
    parallel: int | None = None,
    duration: Callable[[str], float] | None = None,
    scheduler_factory: Callable[[Plan, int], Scheduler] | None = None,
) -> Simulation:
    """Simulate `plan` at `parallel` (default: the plan's); `duration(task_id)` defaults to each estimate."""
    width = parallel or plan.parallel
    sched = (scheduler_factory or (lambda p, n: Scheduler(p, n)))(plan, width)
    length = duration or (lambda tid: plan.task(tid).estimate_s)
    clock = 0.0
    timers: list[tuple[float, int, str]] = []
    seq = 0
    starts: dict[str, float] = {}
    finishes: dict[str, float] = {}
    pending: list[Event] = [Kick()]
    peak = 0
    complete = False
    while True:
        while pending:
            actions = sched.handle(pending.pop(0), clock)
            for action in actions:
                follow = _carry_out(action, clock, length, starts, finishes)
                if isinstance(follow, tuple):
                    heapq.heappush(timers, (follow[0], seq, follow[1]))
                    seq += 1
                elif follow is not None:
                    pending.append(follow)
                if isinstance(action, RunDone):
                    complete = action.complete
            peak = max(peak, sched.active_count())
        if sched.done or not timers:
            break
        clock, _, task_id = heapq.heappop(timers)
        pending.append(AttemptEnded(task_id, Outcome.SUCCESS))
    return Simulation(clock, starts, finishes, peak, complete)


def _carry_out(
    action: Action,
    clock: float,
    length: Callable[[str], float],
    starts: dict[str, float],
    finishes: dict[str, float],
) -> tuple[float, str] | Event | None:
    """Turn one action into a timer (attempt end) or an immediate follow-up event (merge end)."""
    if isinstance(action, StartAttempt):
        starts.setdefault(action.task_id, clock)
        return (clock + max(0.0, length(action.task_id)), action.task_id)
    if isinstance(action, StartMerge):
        finishes[action.task_id] = clock
        return MergeEnded(action.task_id, merged=True)
    return None
