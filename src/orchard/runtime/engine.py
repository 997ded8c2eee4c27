"""The engine loop: feeds the scheduler past-tense events and carries out its actions as asyncio tasks.

Attempts and merges run as independent tasks that report back through one queue; the scheduler alone decides what
happens next. Every status change it decides is a transition of the run's journal, recorded as it happens.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine, Mapping
from typing import Any

from orchard.core.journal import Counts, RunJournal
from orchard.core.model import NO_LIMITS, Limits, MergeOutcome, Outcome, TaskStatus
from orchard.core.records import ControlRequest
from orchard.core.scheduler import (
    Action,
    Applied,
    AttemptEnded,
    Cancel,
    CancelTasks,
    Event,
    HoldChanged,
    Kick,
    MergeEnded,
    Replanned,
    Restored,
    RunDone,
    Scheduler,
    StartAttempt,
    StartMerge,
    StatusChanged,
    Stop,
    StopAttempt,
    TaskState,
    VerifyStarted,
)
from orchard.core.steering import ADD_TASKS, CANCEL_TASKS, Replan, replan
from orchard.errors import DiskFull, GitError, PlanError
from orchard.runtime.adding import answer, depth_of, request_data, take_outbox_requests
from orchard.runtime.attempt import run_attempt
from orchard.runtime.context import RunContext, log
from orchard.runtime.disk import low_space, out_of_space
from orchard.runtime.gate import MergeGate
from orchard.runtime.machine import SAMPLE_INTERVAL_S, sample
from orchard.runtime.merging import merge_task, tidy
from orchard.runtime.publish import Publisher
from orchard.runtime.telemetry import QueueTelemetry

S = TaskStatus
REQUEST_POLL_S = 0.5  # how often the session looks for `orchard cancel TASK` / `set` / `agents add` requests


class Engine:
    """Drives one run (new or resumed) until the scheduler says it is done."""

    def __init__(self, ctx: RunContext, parallel: int, restored: Mapping[str, Restored] | None = None, *,
                 min_free: int = 0, limits: Limits = NO_LIMITS) -> None:
        self.ctx = ctx
        self.sched = Scheduler(ctx.plan, parallel, restored or {}, limits)
        self.telemetry = QueueTelemetry(ctx.journal, self.sched)
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.jobs: set[asyncio.Task[None]] = set()
        self.done: RunDone | None = None
        self.publisher = Publisher(ctx)
        self.min_free = min_free  # below this many free bytes, a failure is the disk's, not the task's
        self.fatal: DiskFull | None = None  # what ended the session early: nothing more can be recorded
        gate = ctx.plan.gate
        self.gate = None if gate is None else MergeGate(ctx, gate, post=self.post, merged=self._tidy,
                                                        crashed=self._gate_crashed)
        self.requests: dict[int, tuple[ControlRequest, Replan | None]] = {}  # taken, not yet applied
        self._planned = (ctx.plan, self.sched.parallel)  # what the scheduler has once the requests taken apply

    def post(self, event: Event) -> None:
        """Thread-safe enough for signal handlers installed with `loop.add_signal_handler`."""
        self.queue.put_nowait(event)

    def stop(self, hard: bool = False, cancel: bool = False) -> None:
        """Start nothing new; stop running agents (SIGTERM, or SIGKILL when `hard`)."""
        self.ctx.processes.interrupt(hard)
        self.post(Cancel() if cancel else Stop())

    async def run(self) -> RunDone:
        sampler = asyncio.ensure_future(self._sample()) if self.sched.limits.any else None
        if sampler is not None:  # the first sample before anything starts
            self.post(await asyncio.to_thread(sample, self.ctx.layout.root))
        self.take_requests()  # made while no session ran: they apply before anything starts
        self.post(Kick())
        watcher = asyncio.ensure_future(self._watch_requests())
        try:
            return await self._loop()
        finally:
            watcher.cancel()
            if sampler is not None:
                sampler.cancel()

    async def _watch_requests(self) -> None:
        while True:
            await asyncio.sleep(REQUEST_POLL_S)
            try:
                await self._take_outboxes()
                self.take_requests()
            except DiskFull as exc:
                self._abort(exc)
            except Exception:  # a store another process locks for long: the next look will do
                log.exception("reading the run's control requests failed")

    def take_requests(self) -> None:
        """Hand the scheduler each request not taken yet; one that no longer applies is answered at once."""
        for request in self.ctx.journal.open_requests():
            if request.id in self.requests:
                continue
            if request.kind == CANCEL_TASKS:
                self.requests[request.id] = (request, None)
                tasks = tuple(str(t) for t in json.loads(request.data)["tasks"])
                self.post(CancelTasks(tasks, request.id))
                continue
            try:
                change = self._added(request) if request.kind == ADD_TASKS else replan(*self._planned, request)
            except (ValueError, KeyError, TypeError, PlanError) as exc:
                self.requests[request.id] = (request, None)
                self._answer(request, f"refused: {exc}", ok=False)
                continue
            self.requests[request.id] = (request, change)
            self._planned = (change.plan, change.parallel)
            self.post(Replanned(change.plan, change.parallel, request.id, change.changes))

    def _added(self, request: ControlRequest) -> Replan:
        """The plan with the tasks an `orchard add` request names (`plan.extend`, given by the session's caller)."""
        if self.ctx.extend is None:
            raise ValueError("this session was started without a way to read added tasks")
        data = json.loads(request.data)
        plan, parallel = self._planned
        parent = data.get("parent")
        addition = self.ctx.extend(plan, data["tasks"], file=str(data.get("file") or "orchard add"), parent=parent,
                                   parent_agent=plan.task(parent).agent if parent in plan else None,
                                   depth=depth_of(self.ctx.journal, parent))
        return Replan(addition.plan, parallel, (addition.said(parent),))

    async def _take_outboxes(self) -> None:
        """Record the `orchard add` requests running agents left in their outboxes (`runtime.adding`)."""
        running = [(t, st.attempts) for t, st in self.sched.tasks.items() if st.status in (S.RUNNING, S.VERIFYING)]
        if not running:
            return
        for found in await asyncio.to_thread(take_outbox_requests, self.ctx.layout, self.ctx.run_id, running):
            if found.problem:
                answer(found.reply, ok=False, result=f"refused: {found.problem}")
                continue
            count = len(found.document.get("tasks") or []) if isinstance(found.document, dict) else 0
            self.ctx.journal.control_requested(ADD_TASKS, request_data(found),
                                               detail=f"add {count} task(s), asked by task {found.task_id}")

    def _answer(self, request: ControlRequest, result: str, *, ok: bool, change: Replan | None = None) -> None:
        """Record what became of a request; an agent's `orchard add` waits for the answer in its outbox."""
        data = json.loads(request.data) if request.kind == ADD_TASKS else {}
        if change is None:
            self.ctx.journal.control_applied(request, result)
        else:
            parallel = change.parallel if change.parallel != self.ctx.journal.run().parallel else None
            self.ctx.journal.control_applied(request, result, plan=change.plan, parallel=parallel,
                                             parent=data.get("parent"))
            self.ctx.width = change.parallel
        answer(data.get("reply"), ok=ok, result=result)

    async def _sample(self) -> None:
        """Tell the scheduler what the machine has left, every few seconds while the run lasts."""
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            self.post(await asyncio.to_thread(sample, self.ctx.layout.root))

    async def _loop(self) -> RunDone:
        while self.done is None:
            wake = self.sched.next_wakeup()
            timeout = None if wake is None else max(0.0, wake - time.time())
            try:
                event = await asyncio.wait_for(self.queue.get(), timeout)
            except TimeoutError:
                event = Kick()
            try:
                self._apply(self.sched.handle(event, time.time()))
                self.telemetry.changed()
            except DiskFull as exc:
                self._abort(exc)
        if self.fatal is None:
            try:
                self.telemetry.close()
            except DiskFull as exc:
                self._abort(exc)
        if self.jobs:  # tidying up after the last merges; never leave children behind
            await asyncio.gather(*self.jobs, return_exceptions=True)
        return self.done

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, StatusChanged):
                record_status(self.ctx.journal, action, self.sched.tasks[action.task_id],
                              self.ctx.task_branch(action.task_id))
            elif isinstance(action, StartAttempt):
                self._spawn(self._attempt(action))
            elif isinstance(action, StartMerge) and self.gate is not None:
                self.gate.add(action.task_id)  # the train batches them: checked below, one candidate at a time
            elif isinstance(action, StartMerge):
                self._spawn(self._merge(action.task_id))
            elif isinstance(action, HoldChanged):
                self.ctx.journal.run_held(action.reason)
            elif isinstance(action, StopAttempt):
                self.ctx.processes.cancel(action.task_id)
            elif isinstance(action, Applied):
                self._applied(action)
            elif isinstance(action, RunDone):
                self.done = action
        check = self.gate.pump() if self.gate is not None else None
        if check is not None:
            self._spawn(check)

    def _applied(self, action: Applied) -> None:
        """Record what a request did; a new plan and width are the run's from now on."""
        request, change = self.requests.pop(action.request)
        self._answer(request, action.result, ok=True, change=change)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.ensure_future(coro)
        self.jobs.add(job)
        job.add_done_callback(self.jobs.discard)

    async def _attempt(self, start: StartAttempt) -> None:
        task_id = start.task_id
        try:
            event: Event = await run_attempt(self.ctx, start, lambda: self.post(VerifyStarted(task_id)))
        except Exception as exc:  # a bug in one attempt must not take the run down
            if self._out_of_space(exc):
                return
            log.exception("attempt %s/%d failed unexpectedly", task_id, start.attempt)
            self._internal_error(task_id, exc)
            event = AttemptEnded(task_id, Outcome.SETUP_FAILED)
        if isinstance(event, AttemptEnded) and event.outcome is not Outcome.SUCCESS and self._low_space():
            return  # the attempt stays open in the journal: the resume closes it as interrupted, using no retry
        self.post(event)

    async def _merge(self, task_id: str) -> None:
        try:
            ended = await merge_task(self.ctx, task_id)
        except Exception as exc:
            if self._out_of_space(exc):
                return
            log.exception("merge of %s failed unexpectedly", task_id)
            self._internal_error(task_id, exc)
            ended = MergeEnded(task_id, merged=False, error=f"internal error: {exc}")
        if ended.error and self._low_space():
            return  # the task stays merging: the resume merges it
        self.post(ended)  # the queue moves on while this job publishes and tidies up
        if ended.merged:
            await self._tidy(task_id)

    async def _tidy(self, task_id: str) -> None:
        """After a merge: publish soon, and free what the task held."""
        self.publisher.want()
        try:
            await asyncio.to_thread(tidy, self.ctx, task_id)
        except Exception:  # what is left is removed at the end of the session (`settle`)
            log.exception("tidying up after %s failed", task_id)

    def _gate_crashed(self, task_ids: tuple[str, ...], exc: Exception) -> None:
        """A check failed in orchard, not in the project: its results fail as a git error would (or the session
        ends, out of space), and the run goes on."""
        if self._out_of_space(exc):
            return
        if not isinstance(exc, GitError):
            log.exception("a check of %s failed unexpectedly", ", ".join(task_ids), exc_info=exc)
        error = f"the gate could not check the result: {exc}"
        for task_id in task_ids:
            self.ctx.journal.merge_finished(task_id, MergeOutcome.ERROR, error=error)
            self.post(MergeEnded(task_id, merged=False, error=error))

    def _internal_error(self, task_id: str, exc: Exception) -> None:
        """Record the bug against the task; if even that fails (the store is gone), the run still goes on."""
        try:
            self.ctx.journal.internal_error(task_id, str(exc) or type(exc).__name__)
        except Exception as again:
            if not self._out_of_space(again):
                log.exception("recording the internal error of %s failed", task_id)

    def _out_of_space(self, exc: BaseException) -> bool:
        """End the session if `exc` means the disk is full; True if it did."""
        full = out_of_space(exc, self.ctx.layout.root, self.min_free)
        if full is not None:
            self._abort(full)
        return full is not None

    def _low_space(self) -> bool:
        full = low_space(self.ctx.layout.root, self.min_free)
        if full is not None:
            self._abort(full)
        return full is not None

    def _abort(self, exc: DiskFull) -> None:
        """Out of space, nothing more can be recorded: kill the agents at once and end the session where a crash
        would, so `orchard resume` picks it up (open attempts end interrupted, using no retry)."""
        if self.fatal is None:
            self.fatal = exc
            self.ctx.processes.interrupt(hard=True)
            self.done = RunDone(complete=False, reason="disk full")
            self.post(Stop("disk full"))  # wakes the loop, which ends on `done`


def record_status(journal: RunJournal, change: StatusChanged, state: TaskState, branch: str) -> None:
    """The journal transition for a status the scheduler decided."""
    counts, task_id, reason = Counts(state.attempts, state.failures), change.task_id, change.reason
    match change.status:
        case S.QUEUED:
            journal.task_queued(task_id, counts=counts, reason=reason)
        case S.PAUSED:
            journal.task_paused(task_id, counts=counts, until=change.until, reason=reason)
        case S.RUNNING:
            journal.task_started(task_id, counts=counts, branch=branch)
        case S.VERIFYING:
            journal.task_verifying(task_id, counts=counts)
        case S.MERGING:
            journal.task_merging(task_id, counts=counts)
        case S.MERGED:
            journal.task_merged(task_id, counts=counts)
        case S.FAILED:
            journal.task_failed(task_id, counts=counts, reason=reason)
        case S.CONFLICT:
            journal.task_conflicted(task_id, counts=counts, reason=reason)
        case S.BLOCKED:
            journal.task_blocked(task_id, counts=counts, reason=reason)
        case S.CANCELLED:
            journal.task_cancelled(task_id, counts=counts, reason=reason)
        case S.PENDING:  # the scheduler never moves a task back to pending; only `orchard retry` does
            raise ValueError(f"unexpected status change of {task_id} to pending")
