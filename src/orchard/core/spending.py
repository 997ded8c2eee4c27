"""What a run's attempts have cost, against the plan's budgets (pure; the scheduler's bookkeeping)."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchard.core.model import Plan


@dataclass
class Spending:
    """Cost so far, per task and in all, and what the run's and each task's `budget_usd` leave."""

    plan: Plan
    total: float = 0.0
    by_task: dict[str, float] = field(default_factory=dict)

    def charge(self, task_id: str, cost: float) -> bool:
        """Add an attempt's cost; True when the run has now reached its budget."""
        self.by_task[task_id] = self.by_task.get(task_id, 0.0) + cost
        self.total += cost
        return self.exhausted()

    def exhausted(self) -> bool:
        """The run's attempts have cost its whole budget."""
        return self.plan.budget_usd is not None and self.total >= self.plan.budget_usd

    def over_task_budget(self, task_id: str) -> bool:
        budget = self.plan.task(task_id).budget_usd
        return budget is not None and self.by_task.get(task_id, 0.0) >= budget

    def left(self, task_id: str) -> float | None:
        """The least of what the task and the run may still spend, if either has a budget."""
        limits = []
        if (task_budget := self.plan.task(task_id).budget_usd) is not None:
            limits.append(task_budget - self.by_task.get(task_id, 0.0))
        if self.plan.budget_usd is not None:
            limits.append(self.plan.budget_usd - self.total)
        return max(0.0, min(limits)) if limits else None
