"""The history learned estimates come from (`core.estimates`): the successful attempts of this repository's recent
runs, read from its store."""

from __future__ import annotations

from orchard.core.estimates import Sample, learned
from orchard.core.journal import Records
from orchard.core.model import Outcome, Plan
from orchard.errors import OrchardError

RUNS_READ = 50  # the most recent runs whose attempts count


def history(records: Records, *, runs: int = RUNS_READ) -> list[Sample]:
    """Every successful, finished attempt of the last `runs` runs, with its task's prompt size."""
    samples = []
    for run in records.runs()[-runs:]:
        try:
            plan = records.plan(run.id)
        except (OrchardError, ValueError, KeyError, TypeError):  # a snapshot this orchard cannot read: skipped
            continue
        for a in records.attempts(run.id):
            if a.outcome is Outcome.SUCCESS and a.finished_at is not None and a.task_id in plan:
                samples.append(Sample(a.task_id, a.agent, len(plan.task(a.task_id).prompt),
                                      max(0.0, a.finished_at - a.started_at)))
    return samples


def with_history(plan: Plan, records: Records) -> tuple[Plan, dict[str, str]]:
    """The plan with estimates learned from the repository's runs (`core.estimates.learned`)."""
    if plan.estimates == "declared" or all(t.estimated != "default" for t in plan.tasks):
        return plan, {}
    return learned(plan, history(records))
