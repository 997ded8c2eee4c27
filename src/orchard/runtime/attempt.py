"""One attempt of one task, its driver half: what the run knows goes into the attempt's job (the start commit,
feedback, what the dependencies did, the slot and ports it holds), the run's executor runs the workspace half
(`runtime.workspace`), and everything it tells is recorded through the run's journal as it happens.

Returns the scheduler's `AttemptEnded`; every failure along the way is a value, never an exception that could take
sibling attempts down.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Callable
from pathlib import Path

from orchard.agents.base import Stream
from orchard.core.journal import AgentExit, AttemptStart, VerifyRun
from orchard.core.model import Outcome
from orchard.core.records import LOCAL_HOST
from orchard.core.scheduler import AttemptEnded, StartAttempt
from orchard.runtime.context import RunContext, note_repaired
from orchard.runtime.executor import LocalExecutor
from orchard.runtime.guardrails import merged_others, resolution_wanted
from orchard.runtime.parents import parents_context
from orchard.runtime.sandbox import Sandboxing
from orchard.runtime.workspace import AttemptJob, WorkspaceResult


async def run_attempt(ctx: RunContext, start: StartAttempt, on_verify: Callable[[], None]) -> AttemptEnded:
    """Run the attempt the scheduler asked for to an outcome, with the task's slot and ports held meanwhile."""
    task_id = start.task_id
    environment = ctx.plan.environment_of(task_id)
    slot, port = ctx.resources.acquire(task_id, environment.ports)
    try:
        if environment.ports and port is None:
            detail = f"no block of {environment.ports} free ports on loopback for the task"
            ctx.journal.attempt_not_started(task_id, start.attempt, Outcome.SETUP_FAILED, detail)
            return AttemptEnded(task_id, Outcome.SETUP_FAILED)
        job = await attempt_job(ctx, start, slot=slot, port=port)
        sink = JournalSink(ctx, job, on_verify)
        executor = ctx.executor if ctx.executor is not None else LocalExecutor(ctx.host)
        result = await executor.run(job, sink)
        return _ended(ctx, job, sink, result)
    finally:
        ctx.resources.release(task_id)


async def attempt_job(ctx: RunContext, start: StartAttempt, *, slot: int, port: int | None) -> AttemptJob:
    """The job of attempt `start`: the task and its agent, the run's paths for it, the integration tip as orchard
    records it now, and what the run knows that the attempt needs."""
    task, run_id, layout = ctx.plan.task(start.task_id), ctx.run_id, ctx.layout
    spec = ctx.plan.agents[start.agent]
    record = ctx.journal.task(task.id)
    sessions = [a.session_id for a in ctx.journal.attempts(task.id) if a.session_id and a.agent == start.agent]
    with ctx.integration.lock:
        tip = ctx.integration.tip
    return AttemptJob(
        run_id=run_id, task=task, number=start.attempt, agent_name=start.agent, agent=spec,
        sandboxing=Sandboxing.of(ctx.plan, spec), environment=ctx.plan.environment_of(task.id),
        branch=ctx.task_branch(task.id), link=layout.worktree(run_id, task.id),
        log_path=layout.log(run_id, task.id, start.attempt),
        prompt_file=layout.prompt_file(run_id, task.id, start.attempt),
        outbox=layout.outbox(run_id, task.id, start.attempt), tip=tip, feedback=record.feedback,
        context=await parents_context(ctx, task), theirs=resolution_wanted(ctx, task),
        session_id=sessions[-1] if sessions else None, budget_usd=start.budget_usd, slot=slot, port=port,
        merged=tuple(sorted(merged_others(ctx, task.id).items())),
        red_on_base=bool(task.verify) and ctx.journal.run().red_on_base(shlex.join(task.verify or ())),
        park=ctx.width, output=ctx.output_events, token=secrets.token_hex(8))


def _ended(ctx: RunContext, job: AttemptJob, sink: JournalSink, result: WorkspaceResult) -> AttemptEnded:
    """Record how the attempt ended; the scheduler's event of it."""
    outcome = result.verdict.outcome
    if not result.started or sink.attempt_id is None:
        ctx.journal.attempt_not_started(job.task.id, job.number, outcome, result.verdict.detail)
        return AttemptEnded(job.task.id, outcome)
    ctx.journal.attempt_finished(sink.attempt_id, result.verdict)
    report = result.report
    return AttemptEnded(job.task.id, outcome, report.resume_at if report else None,
                        report.cost_usd if report else 0.0, setup_failed=result.setup_failed)


class JournalSink:
    """What the workspace half tells of one attempt, recorded through the run's journal (`runtime.workspace`)."""

    def __init__(self, ctx: RunContext, job: AttemptJob, on_verify: Callable[[], None]) -> None:
        self.ctx, self.job, self.on_verify = ctx, job, on_verify
        self.attempt_id: int | None = None  # once started
        self.host = LOCAL_HOST  # where the executor put it

    @property
    def _id(self) -> int:
        assert self.attempt_id is not None, "the workspace told of an attempt before it started"
        return self.attempt_id

    def placed(self, host: str) -> None:
        self.host = host

    def repaired(self, paths: list[str], when: str) -> None:
        note_repaired(self.ctx, paths, when)

    def started(self, worktree: Path, start_commit: str) -> None:
        job = self.job
        self.attempt_id = self.ctx.journal.attempt_started(AttemptStart(
            task_id=job.task.id, number=job.number, agent=job.agent_name, branch=job.branch, worktree=str(worktree),
            start_commit=start_commit, log_path=str(job.log_path), slot=job.slot, port=job.port, host=self.host,
            token=job.token))

    def setup_started(self, command: str) -> None:
        self.ctx.journal.setup_started(self._id, command)

    def setup_finished(self, *, passed: bool, skipped: bool, duration_s: float, detail: str) -> None:
        self.ctx.journal.setup_finished(self._id, passed=passed, skipped=skipped, duration_s=duration_s,
                                        detail=detail)

    def activity(self, text: str) -> None:
        self.ctx.journal.agent_active(self.job.task.id, self.job.number, text)

    def output(self, stream: Stream, line: str) -> None:
        self.ctx.journal.agent_output(self.job.task.id, self.job.number, stream, line)

    def spawned(self, pid: int) -> None:
        self.ctx.journal.agent_spawned(self._id, pid)

    def agent_exited(self, exited: AgentExit) -> None:
        self.ctx.journal.agent_exited(self._id, exited)

    def verifying(self) -> None:
        self.on_verify()

    def verify_finished(self, run: VerifyRun) -> None:
        self.ctx.journal.verify_finished(self._id, run)

    def warned(self, text: str, others: tuple[str, ...]) -> None:
        self.ctx.journal.task_warned(self.job.task.id, text, others=others)

    def noted(self, text: str) -> None:
        self.ctx.journal.noted(text, level="warning", attention=True)

    def teardown_finished(self, *, passed: bool, duration_s: float, detail: str) -> None:
        self.ctx.journal.teardown_finished(self._id, passed=passed, duration_s=duration_s, detail=detail)
