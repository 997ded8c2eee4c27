"""The engine loop: feeds the scheduler past-tense events and carries out its actions as asyncio tasks.

Attempts and merges run as independent tasks that report back through one queue; the scheduler alone decides what
happens next. Every status change is written to the store and the journal in one transaction as it happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any

from orchard.core.events import TaskStatusChanged, iso
from orchard.core.model import Outcome, TaskStatus
from orchard.core.scheduler import (
    Action,
    AttemptEnded,
    Cancel,
    Event,
    Kick,
    MergeEnded,
    Restored,
    RunDone,
    Scheduler,
    StartAttempt,
    StartMerge,
    StatusChanged,
    Stop,
    VerifyStarted,
)
from orchard.runtime.attempt import run_attempt
from orchard.runtime.context import RunContext, log
from orchard.runtime.merging import merge_task, tidy

FAILURE_STATUSES = (TaskStatus.FAILED, TaskStatus.CONFLICT, TaskStatus.BLOCKED, TaskStatus.CANCELLED)


class Engine:
    """Drives one run (new or resumed) until the scheduler says it is done."""

    def __init__(self, ctx: RunContext, parallel: int, restored: Mapping[str, Restored] | None = None) -> None:
        self.ctx = ctx
        self.sched = Scheduler(ctx.plan, parallel, restored or {})
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.jobs: set[asyncio.Task[None]] = set()
        self.done: RunDone | None = None

    def post(self, event: Event) -> None:
        """Thread-safe enough for signal handlers installed with `loop.add_signal_handler`."""
        self.queue.put_nowait(event)

    def stop(self, hard: bool = False, cancel: bool = False) -> None:
        """Start nothing new; stop running agents (SIGTERM, or SIGKILL when `hard`)."""
        self.ctx.interrupt(hard)
        self.post(Cancel() if cancel else Stop())

    async def run(self) -> RunDone:
        self.post(Kick())
        while self.done is None:
            wake = self.sched.next_wakeup()
            timeout = None if wake is None else max(0.0, wake - self.ctx.now())
            try:
                event = await asyncio.wait_for(self.queue.get(), timeout)
            except TimeoutError:
                event = Kick()
            self._apply(self.sched.handle(event, self.ctx.now()))
        if self.jobs:  # tidying up after the last merges; never leave children behind
            await asyncio.gather(*self.jobs, return_exceptions=True)
        return self.done

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, StatusChanged):
                self._record_status(action)
            elif isinstance(action, StartAttempt):
                self._spawn(self._attempt(action))
            elif isinstance(action, StartMerge):
                self._spawn(self._merge(action.task_id))
            elif isinstance(action, RunDone):
                self.done = action

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.ensure_future(coro)
        self.jobs.add(job)
        job.add_done_callback(self.jobs.discard)

    def _record_status(self, change: StatusChanged) -> None:
        ctx, state = self.ctx, self.sched.tasks[change.task_id]
        values: dict[str, object] = {"status": change.status.value, "attempts": state.attempts,
                                     "failures": state.failures}
        now = ctx.now()
        if change.status is TaskStatus.RUNNING:
            values["branch"] = ctx.task_branch(change.task_id)
            if ctx.store.task(ctx.run_id, change.task_id).started_at is None:
                values["started_at"] = now
        if change.status.terminal:
            values["finished_at"] = now
        if change.status in FAILURE_STATUSES and change.reason and change.status is not TaskStatus.FAILED:
            values["error"] = change.reason
        reason = change.reason
        if change.until is not None:
            reason = f"{reason} until {iso(change.until)}"
        with ctx.store.atomic():
            ctx.store.update_task(ctx.run_id, change.task_id, **values)
            ctx.emit(TaskStatusChanged(run_id=ctx.run_id, ts=now, task=change.task_id, status=change.status.value,
                                       attempt=state.attempts, reason=reason, until=iso(change.until)))

    async def _attempt(self, start: StartAttempt) -> None:
        task = self.ctx.plan.task(start.task_id)
        try:
            result = await run_attempt(self.ctx, task, start.attempt, lambda: self.post(VerifyStarted(task.id)),
                                       start.agent, start.budget_usd)
            event: Event = AttemptEnded(task.id, result.outcome, result.resume_at, result.cost_usd)
        except Exception as exc:  # a bug in one attempt must not take the run down
            log.exception("attempt %s/%d failed unexpectedly", task.id, start.attempt)
            self.ctx.store.update_task(self.ctx.run_id, task.id, error=f"internal error: {exc}")
            event = AttemptEnded(task.id, Outcome.SETUP_FAILED)
        self.post(event)

    async def _merge(self, task_id: str) -> None:
        try:
            ended = await merge_task(self.ctx, task_id)
        except Exception as exc:
            log.exception("merge of %s failed unexpectedly", task_id)
            self.ctx.store.update_task(self.ctx.run_id, task_id, error=f"internal error: {exc}")
            ended = MergeEnded(task_id, merged=False)
        self.post(ended)  # the queue moves on while this job tidies up
        if ended.merged:
            try:
                await asyncio.to_thread(tidy, self.ctx, task_id)
            except Exception:  # what is left is removed at the end of the session (`settle`)
                log.exception("tidying up after %s failed", task_id)
