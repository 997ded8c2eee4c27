"""One attempt of one task: a fresh worktree at the integration tip, the agent, its leftovers committed, verify.

Returns the scheduler's `AttemptEnded`; every failure along the way is a value (a `Verdict`, decided once), never
an exception that could take sibling attempts down. Each step is recorded through the run's journal.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from orchard.agents import AttemptContext, AttemptReport, adapter_for
from orchard.agents.base import Invocation, OutputParser, Stream, TailBuffer
from orchard.agents.requirements import agent_environment
from orchard.core.feedback import BASELINE_RED, REFUSED, compose_prompt, failure_feedback, verify_feedback
from orchard.core.journal import AgentExit, AttemptStart, Verdict, VerifyRun
from orchard.core.model import Outcome, Task
from orchard.core.scheduler import AttemptEnded, StartAttempt
from orchard.errors import GitError
from orchard.runtime.context import RunContext, note_repaired
from orchard.runtime.dryrun import NOOP, empty_change
from orchard.runtime.environment import (
    PhaseResult,
    copy_included,
    included_files,
    run_phase,
    setup_stamp,
)
from orchard.runtime.guardrails import Resolution, guard, resolution_wanted, start_resolution
from orchard.runtime.outbox import prepare_outbox, read_summary
from orchard.runtime.parents import parents_context
from orchard.runtime.process import Supervision, append_log, run_process
from orchard.runtime.programs import program_problem
from orchard.runtime.resources import task_variables
from orchard.runtime.sandbox import box_for, confine, mode_for, sandboxed_exit
from orchard.runtime.unconfined import OutsideWatch, changed_entries, of_attempt, reap_adopted
from orchard.vcs import (
    commit_all,
    paths_changed,
    set_ref,
    tip_descending_from,
    tree_without,
    untracked_tops,
    worktree_branch,
)
from orchard.vcs.merge import commit_tree

ACTIVITY_INTERVAL_S = 1.0
DEFAULT_STALL_S = 600.0
# Outcomes whose retry needs no "the last attempt ended with …" feedback: a success, a verify failure (its own
# feedback is recorded with the verify run), an interruption and a rate limit (the agent did nothing wrong).
_NO_FEEDBACK = frozenset({Outcome.SUCCESS, Outcome.VERIFY_FAILED, Outcome.INTERRUPTED, Outcome.RATE_LIMITED,
                          Outcome.CANCELLED})


@dataclass(frozen=True)
class Attempt:
    """One attempt as it goes: what it runs, where, and (once recorded) its journal id and start commit."""

    task: Task
    number: int
    agent: str
    budget_usd: float | None
    branch: str
    worktree: Path  # the task's link (`layout.worktree`) until prepared, then the pool directory it leads to
    log_path: Path
    prompt_file: Path
    outbox: Path  # the one directory of orchard's its agent may write (`runtime.outbox`)
    start_commit: str = ""
    id: int = 0
    included: tuple[str, ...] = ()  # files copied from the user's checkout (`runtime.environment`): never committed
    variables: tuple[tuple[str, str], ...] = ()  # its slot, ports and `environment.env` (`runtime.resources`)
    slot: int = 0
    port: int | None = None
    deadline: float = 0.0  # monotonic: the task's `timeout` bounds the agent and its verify together
    resolution: Resolution | None = None  # the conflict it resolves (`on_conflict: resolve`), merged in its worktree


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


def verdict(outcome: Outcome, detail: str = "", end_commit: str | None = None) -> Verdict:
    """A verdict with the feedback a retry gets for it."""
    feedback = None if outcome in _NO_FEEDBACK else failure_feedback(outcome.value, detail)
    return Verdict(outcome, detail, end_commit, feedback)


async def run_attempt(ctx: RunContext, start: StartAttempt, on_verify: Callable[[], None]) -> AttemptEnded:
    """Run the attempt the scheduler asked for to an outcome, with the task's slot and ports held meanwhile."""
    attempt = _new_attempt(ctx, start)
    environment = ctx.plan.environment_of(attempt.task.id)
    slot, port = ctx.resources.acquire(attempt.task.id, environment.ports)
    try:
        if environment.ports and port is None:
            detail = f"no block of {environment.ports} free ports on loopback for the task"
            ctx.journal.attempt_not_started(attempt.task.id, attempt.number, Outcome.SETUP_FAILED, detail)
            return AttemptEnded(attempt.task.id, Outcome.SETUP_FAILED)
        return await _run(ctx, replace(attempt, slot=slot, port=port), on_verify)
    finally:
        ctx.resources.release(attempt.task.id)


async def _run(ctx: RunContext, attempt: Attempt, on_verify: Callable[[], None]) -> AttemptEnded:
    try:
        theirs = resolution_wanted(ctx, attempt.task)
        worktree, commit, repaired, included, resolution = await asyncio.to_thread(_prepare_worktree, ctx, attempt,
                                                                                   theirs)
    except (GitError, OSError) as exc:
        outcome = Outcome.INTERRUPTED if ctx.processes.stopping else Outcome.SETUP_FAILED  # a hard stop kills git
        ctx.journal.attempt_not_started(attempt.task.id, attempt.number, outcome, f"cannot prepare worktree: {exc}")
        return AttemptEnded(attempt.task.id, outcome)
    note_repaired(ctx, repaired, "before task " + attempt.task.id + " started")
    variables = task_variables(run_id=ctx.run_id, task_id=attempt.task.id, root=str(ctx.user_repo.root),
                               worktree=str(worktree), slot=attempt.slot, port=attempt.port,
                               environment=ctx.plan.environment_of(attempt.task.id))
    attempt = replace(attempt, worktree=worktree, start_commit=commit, included=included, resolution=resolution,
                      variables=tuple(variables.items()), deadline=time.monotonic() + attempt.task.timeout_s)
    context = await parents_context(ctx, attempt.task)
    actx = _agent_context(ctx, attempt, context)
    agent = _invocation(actx, attempt.variables)  # None: a dry run's noop agent (`runtime.dryrun`): no process
    attempt = replace(attempt, id=ctx.journal.attempt_started(AttemptStart(
        task_id=attempt.task.id, number=attempt.number, agent=attempt.agent, branch=attempt.branch,
        worktree=str(attempt.worktree), start_commit=commit, log_path=str(attempt.log_path), slot=attempt.slot,
        port=attempt.port)))
    watch = None if actx.confined else ctx.watch
    if watch is not None:  # an unconfined attempt is a suspect from now on
        watch.running.add(_key(attempt))
    before = await asyncio.to_thread(watch.status) if watch is not None else ""
    report: AttemptReport | None = None
    try:
        setup = await _phase(ctx, attempt, "setup")
        if setup.passed and ctx.plan.environment_of(attempt.task.id).setup:  # what setup made is never committed
            made = await asyncio.to_thread(untracked_tops, attempt.worktree)
            attempt = replace(attempt, included=(*attempt.included, *made))
        if setup.passed:
            report = await (_run_agent(ctx, attempt, *agent) if agent else empty_change(ctx, attempt))
            result = await _judge(ctx, attempt, report, on_verify)
        elif halted := ctx.processes.halted(attempt.task.id):  # stopped from outside: no verdict on the environment
            result = verdict(halted, f"{halted} during setup")
        else:
            result = verdict(Outcome.SETUP_FAILED, setup.detail)
    finally:
        if watch is not None:
            watch.running.discard(_key(attempt))
        await _phase(ctx, attempt, "teardown")  # whatever the outcome, a first Ctrl-C too; never the outcome
    if watch is not None:
        suspects = sorted({_key(attempt), *watch.running})
        changed, touched = await asyncio.to_thread(_outside_changes, ctx, watch, attempt, before)
        result = _judge_outside(ctx, attempt, suspects, changed, touched, result)
    if result.outcome is Outcome.SUCCESS:  # the merge works on the commit: the worktree can serve the next task
        await asyncio.to_thread(ctx.pool.release, ctx.layout.worktree(ctx.run_id, attempt.task.id), ctx.width)
    ctx.journal.attempt_finished(attempt.id, result)
    return AttemptEnded(attempt.task.id, result.outcome, report.resume_at if report else None,
                        report.cost_usd if report else 0.0, setup_failed=result.outcome is Outcome.SETUP_FAILED
                        and not setup.passed)


async def _phase(ctx: RunContext, attempt: Attempt, phase: str) -> PhaseResult:
    """The attempt's environment `setup` or `teardown` (passed when there is none), journaled with its time."""
    environment = ctx.plan.environment_of(attempt.task.id)
    commands = environment.setup if phase == "setup" else environment.teardown
    if not commands:
        return PhaseResult(True)
    if phase == "teardown":
        result = await _run_phase(ctx, attempt, phase, commands)
        ctx.journal.teardown_finished(attempt.id, passed=result.passed, duration_s=result.duration_s,
                                      detail=result.detail)
        return result
    stamp = await asyncio.to_thread(setup_stamp, ctx, attempt.worktree, environment)
    if stamp.current:
        append_log(attempt.log_path, "[orchard: setup skipped: its inputs are as when this worktree last ran it]\n")
        ctx.journal.setup_finished(attempt.id, passed=True, skipped=True, duration_s=0.0)
        return PhaseResult(True, skipped=True)
    ctx.journal.setup_started(attempt.id, shlex.join(commands[0]))
    result = await _run_phase(ctx, attempt, phase, commands)
    stamp.save(result.passed)
    ctx.journal.setup_finished(attempt.id, passed=result.passed, skipped=False, duration_s=result.duration_s,
                               detail=result.detail)
    return result


async def _run_phase(ctx: RunContext, attempt: Attempt, phase: str,
                     commands: tuple[tuple[str, ...], ...]) -> PhaseResult:
    environment = ctx.plan.environment_of(attempt.task.id)

    def on_command(index: int, argv: tuple[str, ...]) -> None:
        if index:  # the first is in `setup.started`; the dashboard shows the command running now
            ctx.journal.agent_active(attempt.task.id, attempt.number, f"{phase}: {shlex.join(argv)}")

    return await run_phase(ctx, phase=phase, commands=commands, task_id=attempt.task.id, agent=attempt.agent,
                           worktree=attempt.worktree, log_path=attempt.log_path,
                           env=attempt_variables(ctx.run_id, attempt.task.id, attempt.number, attempt.worktree,
                                                 attempt.variables),
                           timeout_s=environment.setup_timeout_s, on_command=on_command)


def _new_attempt(ctx: RunContext, start: StartAttempt) -> Attempt:
    task = ctx.plan.task(start.task_id)
    return Attempt(task=task, number=start.attempt, agent=start.agent, budget_usd=start.budget_usd,
                   branch=ctx.task_branch(task.id), worktree=ctx.layout.worktree(ctx.run_id, task.id),
                   log_path=ctx.layout.log(ctx.run_id, task.id, start.attempt),
                   prompt_file=ctx.layout.prompt_file(ctx.run_id, task.id, start.attempt),
                   outbox=ctx.layout.outbox(ctx.run_id, task.id, start.attempt))


def _prepare_worktree(ctx: RunContext, attempt: Attempt, theirs: str | None
                      ) -> tuple[Path, str, list[str], tuple[str, ...], Resolution | None]:
    """orchard's repository as orchard wrote it, then a clean worktree on the task branch at the integration tip as
    it is now (orchard's record, whatever an agent did to the ref), with the files its environment includes and,
    to resolve a conflict, `theirs` (the previous result) merged in; returns where that worktree really is (the
    task's link leads there), its start commit, what was repaired, what was included and the conflict."""
    repaired = ctx.own.restore()
    with ctx.integration.lock:
        tip = ctx.integration.tip
    worktree = ctx.pool.acquire(attempt.worktree, attempt.branch, tip)
    resolution = start_resolution(ctx.git, worktree, tip, theirs) if theirs else None
    wanted = included_files(ctx.user_repo, ctx.plan.environment_of(attempt.task.id))
    return worktree, tip, repaired, tuple(copy_included(ctx.user_repo, worktree, wanted)), resolution


def _agent_context(ctx: RunContext, attempt: Attempt, context: str) -> AttemptContext:
    """Write the attempt's prompt (the task's, what its dependencies did, feedback from the last attempt), make its
    outbox, and describe both to the adapter."""
    task = attempt.task
    feedback = ctx.journal.task(task.id).feedback
    if attempt.resolution is not None:  # what to resolve, and why the last resolution was refused if it was
        refused = feedback if feedback.startswith(REFUSED) else ""
        feedback = attempt.resolution.note + (f"\n\n{refused}" if refused else "")
    prompt = compose_prompt(task.prompt, feedback, attempt.number, context)
    prepare_outbox(attempt.outbox)
    attempt.prompt_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    attempt.prompt_file.write_text(prompt, encoding="utf-8")
    attempt.prompt_file.chmod(0o600)
    sessions = [a.session_id for a in ctx.journal.attempts(task.id) if a.session_id and a.agent == attempt.agent]
    return AttemptContext(run_id=ctx.run_id, task=task, attempt=attempt.number, agent=ctx.plan.agents[attempt.agent],
                          worktree=attempt.worktree, prompt=prompt, prompt_file=attempt.prompt_file,
                          feedback=feedback, session_id=sessions[-1] if sessions else None,
                          budget_usd=attempt.budget_usd, outbox=attempt.outbox,
                          confined=mode_for(ctx.plan, ctx.plan.agents[attempt.agent]) == "bwrap")


def _invocation(actx: AttemptContext, variables: tuple[tuple[str, str], ...]
                ) -> tuple[Invocation, OutputParser] | None:
    """What the agent's adapter runs for the attempt (with the task's variables) and the parser of its output; None
    for a dry run's noop agent, which runs nothing."""
    if actx.agent.type == NOOP:
        return None
    adapter = adapter_for(actx.agent.type)
    inv = adapter.invocation(actx)
    return replace(inv, env={**inv.env, **dict(variables)}), adapter.parser(actx)


async def _run_agent(ctx: RunContext, attempt: Attempt, inv: Invocation, parser: OutputParser) -> AttemptReport:
    """The agent process under supervision, its output parsed as it comes; its exit and spending recorded."""
    journal, task = ctx.journal, attempt.task
    throttle = ActivityThrottle(lambda text: journal.agent_active(task.id, attempt.number, text))

    def on_line(line: str, stream: Stream) -> None:
        if ctx.output_events:
            journal.agent_output(task.id, attempt.number, stream, ctx.redactor(line))
        activity = parser.feed(line, stream)
        if activity:
            throttle.offer(activity)

    def on_spawn(pid: int) -> None:
        ctx.processes.started(task.id, pid)
        journal.agent_spawned(attempt.id, pid)

    spec = ctx.plan.agents[attempt.agent]
    box = box_for(ctx, spec, worktree=attempt.worktree, prompt_file=attempt.prompt_file, outbox=attempt.outbox)
    where = " (in bwrap)" if box else ""
    append_log(attempt.log_path, ctx.redactor(f"[orchard: attempt {attempt.number} on {attempt.agent}{where}: "
                                              f"{shlex.join(inv.argv)}]\n"))
    limits = Supervision(task.timeout_s, float(spec.option("stall_timeout", DEFAULT_STALL_S)),
                         ctx.processes.grace_s)
    exit_info = await run_process(confine(inv, box), attempt.log_path, on_line, limits, on_spawn=on_spawn,
                                  base_env=agent_environment(os.environ, spec.type, spec.option("env_pass")),
                                  redact=ctx.redactor.bytes, stop=ctx.processes.stop_for(task.id))
    exit_info = sandboxed_exit(exit_info) if box else exit_info
    ctx.processes.ended(task.id)
    report = parser.finish(exit_info)
    if report.outcome is Outcome.SUCCESS and not report.summary:  # a command agent's own account, if it left one
        report = replace(report, summary=await asyncio.to_thread(read_summary, attempt.outbox))
    journal.agent_exited(attempt.id, AgentExit(
        exit_code=exit_info.returncode, signal=exit_info.signal, duration_s=exit_info.duration_s,
        tokens_in=report.tokens_in, tokens_out=report.tokens_out, cost_usd=report.cost_usd,
        session_id=report.session_id, summary=report.summary))
    return report


async def _judge(ctx: RunContext, attempt: Attempt, report: AttemptReport, on_verify: Callable[[], None]) -> Verdict:
    """The attempt's verdict: the agent's own, else what its committed result and the verify command say."""
    if report.outcome is not Outcome.SUCCESS:
        if halted := ctx.processes.halted(attempt.task.id):
            return verdict(halted, "run interrupted" if halted is Outcome.INTERRUPTED else "cancelled")
        return verdict(report.outcome, report.detail)
    result = await _collect(ctx, attempt, report.detail)
    result = await guard(ctx, task=attempt.task, start=attempt.start_commit, resolution=attempt.resolution,
                         result=result)
    if result.outcome is Outcome.SUCCESS and attempt.task.verify and attempt.worktree.is_dir():
        on_verify()
        return await _verify(ctx, attempt, result)
    return result


async def _collect(ctx: RunContext, attempt: Attempt, detail: str) -> Verdict:
    """After a successful agent: commit leftovers, and take the result from the task branch only."""
    wt, ref = attempt.worktree, "refs/heads/" + attempt.branch
    try:
        if wt.is_dir():
            on_branch = await asyncio.to_thread(worktree_branch, wt)
            if on_branch != ref:
                return verdict(Outcome.REJECTED, f"the agent left the worktree on {on_branch or 'a detached HEAD'}, "
                                                 f"not {attempt.branch}")
            # what git reads when committing (config: filters; info: attributes) is orchard's again first
            note_repaired(ctx, await asyncio.to_thread(ctx.own.restore), f"after task {attempt.task.id}'s agent")
            await asyncio.to_thread(commit_all, wt, f"orchard: task {attempt.task.id} (attempt {attempt.number})",
                                    leave_out=attempt.included)
        head = await asyncio.to_thread(tip_descending_from, ctx.git, ref, attempt.start_commit)
        if head is not None and attempt.included:
            head = await asyncio.to_thread(_leave_out_included, ctx, attempt, head)
    except GitError as exc:
        if ctx.processes.stopping:  # a hard stop killed git: the attempt is interrupted, not failed
            return verdict(Outcome.INTERRUPTED, f"run interrupted while committing: {exc}")
        return verdict(Outcome.SETUP_FAILED, f"cannot commit the agent's work: {exc}")
    if head is None:
        return verdict(Outcome.REJECTED, f"task branch {attempt.branch} no longer descends from the attempt's start")
    if head == attempt.start_commit and not attempt.task.allow_empty:
        return verdict(Outcome.NO_CHANGES, "no changes", head)
    return verdict(Outcome.SUCCESS, detail, head)


def _leave_out_included(ctx: RunContext, attempt: Attempt, head: str) -> str:
    """The result without the files the environment included, should the agent have committed them itself: one
    commit on the start with the result's tree less those files (its own commits would keep them in history)."""
    committed = paths_changed(ctx.git, attempt.start_commit, head, attempt.included)
    if not committed:
        return head
    tree = tree_without(ctx.git, head, committed)
    message = (f"orchard: task {attempt.task.id} (attempt {attempt.number})\n\nThe agent's commits, without the "
               f"environment's files it committed ({len(committed)}).\n")
    squashed = commit_tree(ctx.git, tree, (attempt.start_commit,), message)
    if not set_ref(ctx.git, "refs/heads/" + attempt.branch, squashed, head, "orchard: leave environment files out"):
        raise GitError(["update-ref", attempt.branch], 1, "the task branch moved while orchard left files out")
    return squashed


async def _verify(ctx: RunContext, attempt: Attempt, collected: Verdict) -> Verdict:
    """Run the task's verify command in its worktree; a failure's output tail becomes the next attempt's feedback."""
    task = attempt.task
    assert task.verify is not None
    tail = TailBuffer(lines=40)
    box = box_for(ctx, ctx.plan.agents[attempt.agent], worktree=attempt.worktree, prompt_file=None)
    append_log(attempt.log_path, ctx.redactor(f"\n[orchard: verify{' (in bwrap)' if box else ''}: "
                                              f"{shlex.join(task.verify)}]\n"))
    env = attempt_variables(ctx.run_id, task.id, attempt.number, attempt.worktree, attempt.variables)
    inv = confine(Invocation(task.verify, attempt.worktree, env=env), box)
    base_env = agent_environment(ctx.environ, "", task.verify_env_pass)
    exit_info = await run_process(inv, attempt.log_path, lambda line, _s: tail.add(line),
                                  Supervision(max(0.1, attempt.deadline - time.monotonic()), None,
                                              ctx.processes.grace_s),
                                  on_spawn=lambda pid: ctx.processes.started(task.id, pid),
                                  base_env=base_env, redact=ctx.redactor.bytes, stop=ctx.processes.stop_for(task.id))
    exit_info = sandboxed_exit(exit_info) if box else exit_info
    ctx.processes.ended(task.id)
    passed = exit_info.returncode == 0 and not exit_info.spawn_error
    output = exit_info.spawn_error or tail.text()
    halted = None if passed else ctx.processes.halted(task.id)
    red = ctx.journal.run().red_on_base(shlex.join(task.verify))
    feedback = None if passed or halted else verify_feedback(task.verify, exit_info.returncode, output,
                                                              red_on_base=red)
    ctx.journal.verify_finished(attempt.id, VerifyRun(passed=passed, exit_code=exit_info.returncode,
                                                      duration_s=exit_info.duration_s, tail=output, feedback=feedback))
    if passed:
        return collected
    if halted:
        return verdict(halted, f"{halted} during verify", collected.end_commit)
    if exit_info.timed_out:
        return verdict(Outcome.TIMEOUT, f"verify timed out: the task's timeout ({task.timeout_s:g}s) bounds the agent "
                                        "and its verify together", collected.end_commit)
    # a misspelt program reads as such, not as "exit None" (the sandbox's own exit hides which it was)
    problem = program_problem(task.verify[0], cwd=attempt.worktree, path={**base_env, **env}.get("PATH"))
    if problem:
        return verdict(Outcome.VERIFY_FAILED, f"verify program {problem}: {task.verify[0]}", collected.end_commit)
    also = f"; {BASELINE_RED}: it failed on the base too" if red else ""
    return verdict(Outcome.VERIFY_FAILED, f"verify failed (exit {exit_info.returncode}{also})", collected.end_commit)


def _key(attempt: Attempt) -> str:
    return f"{attempt.task.id}/{attempt.number}"


def _outside_changes(ctx: RunContext, watch: OutsideWatch, attempt: Attempt,
                     before: str) -> tuple[list[str], list[str]]:
    """After an unconfined attempt (in a worker thread): its adopted daemons killed; what changed in the user's git
    directory (put back) and in the user's checkout."""
    reap_adopted(of_attempt(ctx.run_id, attempt.task.id, attempt.number, attempt.worktree))
    return watch.restore(), changed_entries(before, watch.status())


def _judge_outside(ctx: RunContext, attempt: Attempt, suspects: list[str], changed: list[str], touched: list[str],
                   result: Verdict) -> Verdict:
    """Say what unconfined agents changed outside their worktrees; `tampered` if this attempt changed the user's git
    directory and was the only unconfined one running."""
    if changed:
        ctx.journal.noted(f"{', '.join(changed)} in your repository's git directory changed while unconfined "
                          f"agents ran ({', '.join(suspects)}): put back as it was", level="warning", attention=True)
    if touched:
        shown = ", ".join(touched[:20]) + (f" (+{len(touched) - 20} more)" if len(touched) > 20 else "")
        ctx.journal.noted(f"your checkout changed while unconfined agents ran ({', '.join(suspects)}): {shown}",
                          level="warning", attention=True)
    if changed and suspects == [_key(attempt)]:
        return verdict(Outcome.TAMPERED, f"the agent changed the user's git directory: {', '.join(changed)}")
    return result


def attempt_variables(run_id: str, task_id: str, number: int, worktree: Path,
                      variables: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """What setup, verify and teardown are told of their attempt (the run id also lets a resume find them if
    orchard dies), with the task's resources."""
    return {"ORCHARD_RUN_ID": run_id, "ORCHARD_TASK_ID": task_id, "ORCHARD_ATTEMPT": str(number),
            "ORCHARD_WORKTREE": str(worktree), **dict(variables)}
