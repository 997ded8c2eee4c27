"""What a run did, task by task, as typed values: the library's `RunResult.tasks` (pure: from a run's records)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchard.core.model import Outcome, TaskStatus
from orchard.core.records import AttemptRecord, TaskRecord


@dataclass(frozen=True, slots=True)
class TaskResult:
    """One task at the end of a session.

    `outcome` is its latest attempt's (None before any ran); `merged_commit` the merge of its result on the
    integration branch (None unless merged); `cost_usd` and `duration_s` are summed over its attempts; `error` is
    why it did not merge ("" when it did), as `orchard status` shows it."""

    id: str
    status: TaskStatus
    agent: str
    attempts: int
    outcome: Outcome | None
    merged_commit: str | None
    cost_usd: float
    duration_s: float
    error: str
    branch: str | None = None

    @property
    def merged(self) -> bool:
        return self.status is TaskStatus.MERGED


def task_results(tasks: Sequence[TaskRecord], attempts: Sequence[AttemptRecord]) -> tuple[TaskResult, ...]:
    """Every task of a run (its records, in plan order) with its attempts; an attempt still open counts nothing
    (none is once a session has ended)."""
    by_task: dict[str, list[AttemptRecord]] = {}
    for attempt in attempts:
        by_task.setdefault(attempt.task_id, []).append(attempt)
    results = []
    for t in tasks:
        attempts = by_task.get(t.task_id, [])
        results.append(TaskResult(
            id=t.task_id, status=t.status, agent=attempts[-1].agent if attempts else t.agent, attempts=t.attempts,
            outcome=attempts[-1].outcome if attempts else None, merged_commit=t.merged_commit,
            cost_usd=round(sum((a.cost_usd for a in attempts), 0.0), 6),
            duration_s=round(sum(max(0.0, (a.finished_at or a.started_at) - a.started_at) for a in attempts), 3),
            error=t.error, branch=t.branch))
    return tuple(results)
