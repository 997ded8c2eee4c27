"""When a live run will end, estimated (pure): the rest of the run simulated with the real scheduler from where it
stands (`core.simulate`, what `orchard plan` uses before a run), each task's estimate scaled by what this run has
learned so far: the median ratio of its finished attempts' actual durations to their tasks' estimates."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from orchard.core.journal import Records
from orchard.core.model import Outcome, Plan, TaskStatus
from orchard.core.records import AttemptRecord, TaskRecord
from orchard.core.scheduler import Scheduler
from orchard.core.scheduler_io import Restored
from orchard.core.simulate import simulate
from orchard.errors import OrchardError

RATIO_BOUNDS = (0.05, 20.0)  # one odd attempt must not make the estimate absurd
MIN_LEFT_S = 1.0  # a running attempt past its estimate still needs a moment (its verify, its merge)


def learned_ratio(plan: Plan, attempts: Sequence[AttemptRecord]) -> float:
    """Actual over estimated duration, the median over this run's successful attempts (1.0 before any)."""
    ratios = [(a.finished_at - a.started_at) / plan.task(a.task_id).estimate_s for a in attempts
              if a.outcome is Outcome.SUCCESS and a.finished_at is not None and a.task_id in plan
              and plan.task(a.task_id).estimate_s > 0]
    if not ratios:
        return 1.0
    low, high = RATIO_BOUNDS
    return min(high, max(low, statistics.median(ratios)))


def estimated_finish(plan: Plan, tasks: Sequence[TaskRecord], attempts: Sequence[AttemptRecord], *,
                     parallel: int, now: float) -> float | None:
    """When the run's last task should be done, as seconds since the epoch; None when nothing is left to do."""
    if all(t.status.terminal for t in tasks):
        return None
    ratio = learned_ratio(plan, attempts)
    running_since = {a.task_id: a.started_at for a in attempts if a.finished_at is None}
    statuses = {t.task_id: t.status for t in tasks}

    def left(task_id: str) -> float:
        full = plan.task(task_id).estimate_s * ratio
        if statuses.get(task_id) is TaskStatus.MERGING:
            return MIN_LEFT_S
        started = running_since.get(task_id)
        return max(MIN_LEFT_S, full - (now - started)) if started is not None else full

    restored = {t.task_id: Restored(t.status if t.status.terminal else TaskStatus.PENDING) for t in tasks}
    sim = simulate(plan, parallel, duration=left,
                   scheduler_factory=lambda p, n: Scheduler(p, n, restored=restored))
    return now + sim.makespan_s


def run_eta(records: Records, run_id: str, *, now: float) -> float | None:
    """`estimated_finish` of a recorded run (`status`, the web dashboard); None when its plan cannot be read (a
    view of the run must go on without it)."""
    try:
        plan = records.plan(run_id)
    except OrchardError:
        return None
    return estimated_finish(plan, records.tasks(run_id), records.attempts(run_id),
                            parallel=records.run(run_id).parallel, now=now)
