"""The run journal's transitions for live control: a request another process makes of a run (`orchard cancel
TASK`, `orchard set`, `orchard agents add`) and what the run's session did with it; and a plan reloaded from its
file as a session starts (`--reload`).

A mixin of `core.transitions.Journal`: the same transactions, redaction and events as every other transition. A
request changes nothing by itself; the session applies it (`runtime.engine`), and a change of limits or agents is
written to the run's plan snapshot with the record of it, so a resume goes on with the plan as it is now.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING

from orchard.core.events import ControlApplied, ControlRequested, OrchardEvent, RunNote
from orchard.core.model import TaskStatus
from orchard.core.records import ControlRequest, TaskRecord

if TYPE_CHECKING:
    from orchard.core.journal import Counts, Records
    from orchard.core.model import Plan
    from orchard.core.plan_diff import Reload
    from orchard.core.records import RunRecord


class ControlTransitions:
    """`control_requested`, `control_applied` and `open_requests`; what they use of the journal is declared here
    for the type checker."""

    if TYPE_CHECKING:
        run_id: str
        records: Records
        _clock: Callable[[], float]
        _plan: Plan | None

        def atomic(self, *, durable: bool = False) -> AbstractContextManager[None]: ...
        def run(self) -> RunRecord: ...
        def _emit(self, event: OrchardEvent) -> None: ...
        def _task_records(self) -> dict[str, TaskRecord]: ...
        def task_cancelled(self, task_id: str, *, counts: Counts | None = None, reason: str = "cancelled") -> None:
            ...

    def control_requested(self, kind: str, data: str, *, detail: str) -> int:
        """Record a request for the run's session (`data`: its JSON, `detail`: the command in words)."""
        with self.atomic():
            now = self._clock()
            request = self.records.add_request(ControlRequest(id=0, run_id=self.run_id, kind=kind, data=data,
                                                              created_at=now))
            self._emit(ControlRequested(run_id=self.run_id, ts=now, request=request, kind=kind, detail=detail))
        return request

    def open_requests(self) -> list[ControlRequest]:
        """Requests not carried out yet, oldest first."""
        return self.records.requests(self.run_id, open_only=True)

    def control_applied(self, request: ControlRequest, result: str, *, plan: Plan | None = None,
                        parallel: int | None = None, parent: str | None = None) -> None:
        """The session carried `request` out; a new `plan` (limits, agents, added tasks, whose `parent` is the task
        that asked, if one did) and `parallel` are the run's from now on, in this session and the next."""
        with self.atomic(durable=plan is not None):
            now = self._clock()
            self.records.close_request(request.id, result=result, applied_at=now)
            if plan is not None:
                self._add_task_records(plan, parent)
                self.records.save_plan(self.run_id, plan)
                self._plan = plan
            if parallel is not None:
                self.records.save_run(replace(self.run(), parallel=parallel))
            self._emit(ControlApplied(run_id=self.run_id, ts=now, request=request.id, kind=request.kind,
                                      result=result))

    def plan_reloaded(self, reload: Reload, *, source: str) -> None:
        """The run goes on with `reload.plan` (`resume --reload`): new tasks get records, tasks removed from the
        file are cancelled, and the snapshot a later resume reads is the new plan; one transaction, one note."""
        with self.atomic(durable=True):
            self._add_task_records(reload.plan, None)
            self.records.save_plan(self.run_id, reload.plan)
            self._plan = reload.plan
            for task_id in reload.cancel:
                self.task_cancelled(task_id, reason=f"removed from {source}")
            self._emit(RunNote(run_id=self.run_id, ts=self._clock(), level="info", text=reload.said(source)))

    def _add_task_records(self, plan: Plan, parent: str | None) -> None:
        """Records for the tasks `plan` has and the run's records do not (they start pending)."""
        known = self._task_records()
        new = [TaskRecord(run_id=self.run_id, task_id=t.id, position=i, status=TaskStatus.PENDING, agent=t.agent,
                          track=t.track, parent=parent) for i, t in enumerate(plan.tasks) if t.id not in known]
        if new:
            self.records.add_tasks(new)
            known.update({t.task_id: t for t in new})
