"""The dashboard's model: a snapshot of a run, updated event by event, rendered by `ui.dashboard`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchard.core.events import (
    AgentActivity,
    AttemptFinished,
    AttemptStarted,
    CheckFinished,
    CheckStarted,
    MergeFinished,
    OrchardEvent,
    QueueChanged,
    RunFinished,
    RunHeld,
    RunNote,
    RunStarted,
    SetupFinished,
    SetupStarted,
    TaskStatusChanged,
    TaskWarning,
    TeardownFinished,
    VerifyFinished,
)
from orchard.core.model import MergeOutcome, Outcome, RunStatus, TaskStatus
from orchard.core.records import elsewhere


@dataclass
class TaskView:
    """One dashboard row."""

    id: str
    status: TaskStatus = TaskStatus.PENDING
    agent: str = ""
    attempt: int = 0
    attempt_started: float | None = None
    finished_at: float | None = None
    activity: str = ""
    cost_usd: float = 0.0
    last_outcome: str = ""  # why the previous attempt failed, shown while a retry runs

    def shown_activity(self) -> str:
        """The activity, prefixed with the reason for the retry while one runs."""
        if self.attempt > 1 and self.last_outcome and self.finished_at is None:
            return f"retry after {self.last_outcome} · {self.activity}"
        return self.activity


@dataclass
class GateView:
    """The gate's line: the candidate being checked and since when, checks so far, failed ones, and bisection
    checks (of part of a candidate that failed)."""

    checking: tuple[str, ...] = ()
    since: float = 0.0
    checks: int = 0
    failed: int = 0
    bisections: int = 0
    _failed_sets: list[frozenset[str]] = field(default_factory=list)

    def apply(self, event: CheckStarted | CheckFinished) -> None:
        if isinstance(event, CheckStarted):
            self.checking, self.since = event.tasks, event.ts
            part = frozenset(event.tasks)
            self.bisections += any(part < failed for failed in self._failed_sets)
            return
        self.checking, self.checks = (), self.checks + 1
        if not event.passed:
            self.failed += 1
            self._failed_sets = [*self._failed_sets[-7:], frozenset(event.tasks)]


@dataclass
class Snapshot:
    """Everything the live view shows, derived from events only."""

    run_id: str = ""
    parallel: int = 0
    total: int = 0
    started: float = field(default_factory=time.time)
    tasks: dict[str, TaskView] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    status: RunStatus = RunStatus.RUNNING
    ended: float | None = None  # when the session ended (its `run.finished`, or the dashboard saw it stop)
    held: str = ""  # why new attempts wait for the machine
    gate: GateView | None = None  # the merge gate's line, once it has checked anything
    earlier_cost: float = 0.0  # what the run's earlier sessions spent (`RunStarted.cost_usd`)
    eta: float | None = None  # when the run should end (`QueueChanged.eta`), while it runs

    def apply(self, event: OrchardEvent) -> None:
        """Fold one event into the snapshot."""
        if isinstance(event, RunStarted):
            self.run_id, self.parallel, self.total, self.started = event.run_id, event.parallel, event.tasks, event.ts
            self.earlier_cost = event.cost_usd
            self._seed(event)
            return
        if isinstance(event, RunNote | TaskWarning):  # a warning on a task's result is shown like a note
            text = event.text if isinstance(event, RunNote) else f"warning: {event.text.splitlines()[0]}"
            self.notes = [*self.notes[-2:], text]
            return
        if isinstance(event, RunFinished):
            self.summary, self.status, self.held, self.ended = event.summary, event.status, "", event.ts
            return
        if isinstance(event, RunHeld):
            self.held = event.reason
            return
        if isinstance(event, QueueChanged):
            self.eta = datetime.fromisoformat(event.eta.replace("Z", "+00:00")).timestamp() if event.eta else None
            return
        if isinstance(event, CheckStarted | CheckFinished):
            self.gate = self.gate or GateView()
            self.gate.apply(event)
            return
        task_id = event.task_id
        if task_id is None:
            return
        view = self.tasks.setdefault(task_id, TaskView(task_id))
        self._apply_task(view, event)
        self.total = max(self.total, len(self.tasks))  # a task `orchard add` added

    def _seed(self, event: RunStarted) -> None:
        """Every task's row as the session starts: a resumed session counts what earlier ones merged or failed."""
        for task_id, status in event.statuses.items():
            view = self.tasks.setdefault(task_id, TaskView(task_id))
            view.status = TaskStatus(status)
            if view.status.terminal:
                view.finished_at = view.finished_at or event.ts
                view.activity = view.activity or ("in an earlier session" if event.resumed else "")

    def stopped(self, ts: float) -> None:
        """The session ended without saying how (an interrupt that escaped it, an error): the last frame shows the
        run interrupted at `ts`, its clocks stopped there, instead of a run that seems to go on."""
        if self.ended is None and self.run_id:
            self.status, self.ended, self.held = RunStatus.INTERRUPTED, ts, ""

    def _apply_task(self, view: TaskView, event: OrchardEvent) -> None:
        if isinstance(event, TaskStatusChanged):
            view.status = event.status
            if event.status.terminal:
                view.finished_at = event.ts
                if event.reason:
                    view.activity = event.reason
            else:
                view.finished_at = None  # going again: `orchard retry`, or an interrupted attempt waiting anew
                if event.status is TaskStatus.PAUSED and event.reason:
                    view.activity = event.reason  # "claude rate limited until …"
        elif isinstance(event, AttemptStarted):
            view.attempt, view.attempt_started = event.attempt, event.ts
            view.agent = event.agent + elsewhere(event.host)  # "claude on 10.0.0.7#3f2a1c0d" on a cluster
            view.activity = "started"
        elif isinstance(event, AgentActivity):
            view.activity = event.text
        elif isinstance(event, AttemptFinished):
            view.cost_usd += event.cost_usd
            view.last_outcome = event.outcome if event.outcome is not Outcome.SUCCESS else view.last_outcome
            view.activity = f"{event.outcome}" + (f": {event.detail}" if event.detail else "")
        elif isinstance(event, (SetupStarted, SetupFinished, TeardownFinished, VerifyFinished, MergeFinished)):
            view.activity = event.message()
            if isinstance(event, MergeFinished) and event.result is MergeOutcome.CONFLICT:
                view.last_outcome = "conflict"

    def views(self) -> list[TaskView]:
        """The rows as they are now (a copy: the dashboard's refresh thread reads while events arrive)."""
        return list(self.tasks.values())

    def cost(self) -> float:
        """The run's cost so far (earlier sessions' too)."""
        return self.earlier_cost + sum(t.cost_usd for t in self.views())

    def count(self, which: Callable[[TaskStatus], bool]) -> int:
        """How many tasks have a status `which` accepts."""
        return sum(1 for t in self.views() if which(t.status))

    def groups(self) -> list[tuple[str, list[TaskView]]]:
        """The rows in the order the dashboard shows them, by group: the tasks being worked on (by start), those
        that failed, conflicted or were blocked (own failures first, then by most recent), those waiting (paused,
        then queued, then pending, in plan order), and those done (merged or cancelled, most recent first). What
        needs the user comes before what went well; a group the screen cannot hold is cut from its end."""
        views = self.views()
        active = sorted((t for t in views if t.status.active), key=lambda t: t.attempt_started or 0.0)
        failed = sorted((t for t in views if t.status.failed),
                        key=lambda t: (t.status is TaskStatus.BLOCKED, -(t.finished_at or 0.0)))
        waiting = sorted((t for t in views if t.status.waiting), key=lambda t: _WAITING_ORDER[t.status])
        done = sorted((t for t in views if t.status in (TaskStatus.MERGED, TaskStatus.CANCELLED)),
                      key=lambda t: -(t.finished_at or 0.0))
        return [("active", active), ("failed", failed), ("waiting", waiting), ("done", done)]


_WAITING_ORDER = {TaskStatus.PAUSED: 0, TaskStatus.QUEUED: 1, TaskStatus.PENDING: 2}
