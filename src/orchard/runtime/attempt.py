"""One attempt of one task: a fresh worktree at the integration tip, the agent, its leftovers committed, verify.

Returns an outcome value for the scheduler; every failure along the way is a value with a reason, not an exception
that could take sibling attempts down.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchard.agents import AttemptContext, AttemptReport, adapter_for
from orchard.agents.base import Invocation, Stream, TailBuffer
from orchard.agents.requirements import agent_environment
from orchard.core.events import AgentActivity, AttemptFinished, AttemptStarted, RunNote, VerifyFinished
from orchard.core.feedback import compose_prompt, failure_feedback, verify_feedback
from orchard.core.model import Outcome, Task
from orchard.errors import GitError
from orchard.runtime.context import RunContext
from orchard.runtime.process import Supervision, append_log, run_process
from orchard.vcs import commit_all, tip_descending_from, worktree_branch

ACTIVITY_INTERVAL_S = 1.0
DEFAULT_STALL_S = 600.0


@dataclass(frozen=True)
class AttemptResult:
    """What the engine hands back to the scheduler, plus feedback for the next attempt."""

    outcome: Outcome
    feedback: str = ""
    resume_at: float | None = None
    cost_usd: float = 0.0


class ActivityThrottle:
    """Publishes at most one activity line per interval per attempt (the dashboard only shows the latest)."""

    def __init__(self, publish: Callable[[str], None]) -> None:
        self.publish = publish
        self.last = 0.0

    def offer(self, text: str) -> None:
        now = time.monotonic()
        if now - self.last >= ACTIVITY_INTERVAL_S:
            self.last = now
            self.publish(text)


async def run_attempt(ctx: RunContext, task: Task, number: int, on_verify: Callable[[], None],
                      agent: str | None = None, budget_usd: float | None = None) -> AttemptResult:
    """Run attempt `number` of `task` on `agent` (default: its own) to an outcome."""
    agent = agent or task.agent
    branch = ctx.task_branch(task.id)
    worktree = ctx.layout.worktree(ctx.run_id, task.id)
    try:
        start = await asyncio.to_thread(_prepare_worktree, ctx, branch, worktree)
    except (GitError, OSError) as exc:
        return _setup_failed(ctx, task, number, f"cannot prepare worktree: {exc}")
    feedback = ctx.store.task(ctx.run_id, task.id).feedback
    prompt = compose_prompt(task.prompt, feedback, number)
    prompt_file = ctx.layout.prompt_file(ctx.run_id, task.id, number)
    prompt_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    prompt_file.write_text(prompt, encoding="utf-8")
    prompt_file.chmod(0o600)
    spec = ctx.plan.agents[agent]
    actx = AttemptContext(ctx.run_id, task, number, spec, worktree, prompt, prompt_file, feedback,
                          _previous_session(ctx, task.id, agent), budget_usd)
    adapter = adapter_for(spec.type)
    inv, parser = adapter.invocation(actx), adapter.parser(actx)
    log_path = ctx.layout.log(ctx.run_id, task.id, number)
    attempt_id = ctx.store.start_attempt(ctx.run_id, task.id, number, agent, ctx.now(), str(worktree), start,
                                         str(log_path))
    ctx.emit(AttemptStarted(run_id=ctx.run_id, ts=ctx.now(), task=task.id, attempt=number, agent=agent,
                            branch=branch, worktree=str(worktree), start_commit=start))
    throttle = ActivityThrottle(lambda text: ctx.emit(
        AgentActivity(run_id=ctx.run_id, ts=ctx.now(), task=task.id, attempt=number, text=text)))

    def on_line(line: str, stream: Stream) -> None:
        activity = parser.feed(line, stream)
        if activity:
            throttle.offer(activity)

    append_log(log_path, ctx.redactor(f"[orchard: attempt {number} on {agent}: {shlex.join(inv.argv)}]\n"))
    limits = Supervision(task.timeout_s, float(spec.option("stall_timeout", DEFAULT_STALL_S)), ctx.grace_s)
    environ = agent_environment(os.environ, spec.type, spec.option("env_pass"))
    exit_info = await run_process(inv, log_path, on_line, limits, lambda pid: _spawned(ctx, task.id, attempt_id, pid),
                                  base_env=environ, redact=ctx.redactor.bytes)
    ctx.procs.pop(task.id, None)
    report = parser.finish(exit_info)
    if ctx.stopping and report.outcome is not Outcome.SUCCESS:
        report = AttemptReport(Outcome.INTERRUPTED, "run interrupted", report.tokens_in, report.tokens_out,
                               report.cost_usd, report.session_id)
    ctx.store.update_attempt(attempt_id, exit_code=exit_info.returncode, signal=exit_info.signal,
                             tokens_in=report.tokens_in, tokens_out=report.tokens_out, cost_usd=report.cost_usd,
                             session_id=report.session_id)
    if report.outcome is Outcome.SUCCESS:
        report = await _collect(ctx, task, branch, worktree, start, attempt_id, number, on_verify, report)
    if report.outcome is Outcome.SUCCESS:  # the merge works on the commit: the worktree can serve the next task
        await asyncio.to_thread(ctx.pool.release, worktree, ctx.width)
    return _finish(ctx, task, number, attempt_id, exit_info.returncode, exit_info.signal, exit_info.duration_s,
                   report)


def _prepare_worktree(ctx: RunContext, branch: str, path: Path) -> str:
    """A clean worktree on the task branch at the integration tip as it is now (orchard's record, whatever an agent
    did to the ref); returns that start commit."""
    with ctx.ref_lock:
        tip = ctx.integration_tip
    ctx.pool.acquire(path, branch, tip)
    return tip


def _spawned(ctx: RunContext, task_id: str, attempt_id: int, pid: int) -> None:
    ctx.procs[task_id] = pid
    ctx.store.update_attempt(attempt_id, pid=pid, pgid=pid)


def _previous_session(ctx: RunContext, task_id: str, agent: str) -> str | None:
    """The session of the task's last attempt on the same agent, for agents that can resume one."""
    sessions = [a.session_id for a in ctx.store.attempts(ctx.run_id, task_id) if a.session_id and a.agent == agent]
    return sessions[-1] if sessions else None


async def _collect(ctx: RunContext, task: Task, branch: str, wt: Path, start: str, attempt_id: int,
                   number: int, on_verify: Callable[[], None], report: AttemptReport) -> AttemptReport:
    """After a successful agent: commit leftovers, take the result from the task branch only, then verify."""
    try:
        on_branch = await asyncio.to_thread(worktree_branch, wt) if wt.is_dir() else None
        if wt.is_dir() and on_branch != "refs/heads/" + branch:
            return _with(report, Outcome.REJECTED, f"the agent left the worktree on {on_branch or 'a detached HEAD'}, "
                         f"not {branch}")
        if wt.is_dir():
            await asyncio.to_thread(commit_all, wt, f"orchard: task {task.id} (attempt {number})")
        head = await asyncio.to_thread(tip_descending_from, ctx.repo, "refs/heads/" + branch, start)
    except GitError as exc:
        return _with(report, Outcome.SETUP_FAILED, f"cannot commit the agent's work: {exc}")
    if head is None:
        return _with(report, Outcome.REJECTED, f"task branch {branch} no longer descends from the attempt's start")
    ctx.store.update_attempt(attempt_id, end_commit=head)
    if head == start and not task.allow_empty:
        return _with(report, Outcome.NO_CHANGES, "no changes")
    if task.verify and wt.is_dir():
        on_verify()
        return await _verify(ctx, task, wt, number, report)
    return report


async def _verify(ctx: RunContext, task: Task, wt: Path, number: int, report: AttemptReport) -> AttemptReport:
    """Run the task's verify command in its worktree; a failure carries the output tail as feedback."""
    assert task.verify is not None
    tail = TailBuffer(lines=40)
    log_path = ctx.layout.log(ctx.run_id, task.id, number)
    append_log(log_path, ctx.redactor(f"\n[orchard: verify: {shlex.join(task.verify)}]\n"))
    inv = Invocation(task.verify, wt)
    exit_info = await run_process(inv, log_path, lambda line, _s: tail.add(line),
                                  Supervision(task.timeout_s, None, ctx.grace_s),
                                  on_spawn=lambda pid: ctx.procs.__setitem__(task.id, pid), redact=ctx.redactor.bytes)
    ctx.procs.pop(task.id, None)
    passed = exit_info.returncode == 0 and not exit_info.spawn_error
    detail = exit_info.spawn_error or tail.text()
    ctx.emit(VerifyFinished(run_id=ctx.run_id, ts=ctx.now(), task=task.id, attempt=number, passed=passed,
                            exit_code=exit_info.returncode, duration_s=exit_info.duration_s,
                            tail=detail[-2000:]))
    if passed:
        return report
    if ctx.stopping:
        return _with(report, Outcome.INTERRUPTED, "run interrupted during verify")
    feedback = verify_feedback(task.verify, exit_info.returncode, detail)
    ctx.store.update_task(ctx.run_id, task.id, feedback=feedback)
    return _with(report, Outcome.VERIFY_FAILED, f"verify failed (exit {exit_info.returncode})")


def _with(report: AttemptReport, outcome: Outcome, detail: str) -> AttemptReport:
    return AttemptReport(outcome, detail, report.tokens_in, report.tokens_out, report.cost_usd, report.session_id,
                         report.resume_at)


def _setup_failed(ctx: RunContext, task: Task, number: int, detail: str) -> AttemptResult:
    ctx.emit(AttemptFinished(run_id=ctx.run_id, ts=ctx.now(), task=task.id, attempt=number,
                             outcome=Outcome.SETUP_FAILED.value, detail=detail))
    ctx.store.update_task(ctx.run_id, task.id, error=detail)
    return AttemptResult(Outcome.SETUP_FAILED)


def _finish(ctx: RunContext, task: Task, number: int, attempt_id: int, exit_code: int | None, sig: int | None,
            duration_s: float, report: AttemptReport) -> AttemptResult:
    """Record the attempt's end, keep feedback for a retry, and publish it."""
    ctx.store.update_attempt(attempt_id, finished_at=ctx.now(), outcome=report.outcome.value, detail=report.detail)
    if report.outcome not in (Outcome.SUCCESS, Outcome.VERIFY_FAILED, Outcome.INTERRUPTED, Outcome.RATE_LIMITED):
        ctx.store.update_task(ctx.run_id, task.id, feedback=failure_feedback(report.outcome.value, report.detail))
    if report.outcome is not Outcome.SUCCESS:
        ctx.store.update_task(ctx.run_id, task.id, error=f"{report.outcome.value}: {report.detail}".strip(": "))
    ctx.emit(AttemptFinished(run_id=ctx.run_id, ts=ctx.now(), task=task.id, attempt=number,
                             outcome=report.outcome.value, exit_code=exit_code, signal=sig, duration_s=duration_s,
                             tokens_in=report.tokens_in, tokens_out=report.tokens_out, cost_usd=report.cost_usd,
                             detail=report.detail))
    return AttemptResult(report.outcome, resume_at=report.resume_at, cost_usd=report.cost_usd)


def note_restored(ctx: RunContext, moved_to: str) -> None:
    """Tell the user an agent had moved the integration branch and orchard put it back."""
    ctx.emit(RunNote(run_id=ctx.run_id, ts=ctx.now(), level="warning",
                     text=f"{ctx.integration_branch} had been moved to {moved_to[:12]} by an agent; "
                          f"restored to {ctx.integration_tip[:12]}"))
