"""The workspace half of an attempt, on the host that runs it: a worktree from the host's pool at the job's start
commit, the environment's setup, the agent, its leftovers committed, the guardrails, verify, teardown, and the
worktree parked again after a success.

It takes an `AttemptJob` (values only: no run context, no journal, no store) and tells everything that happens
through an `AttemptSink`, then returns a `WorkspaceResult`; the driver half (`runtime.attempt`) turns the sink's
calls into the journal's transitions. Every failure is a value (a `Verdict`), never an exception that could take
sibling attempts down. The executor (`runtime.executor`) decides where this runs; the function is the same.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from orchard.agents import AttemptContext, AttemptReport, adapter_for
from orchard.agents.base import Invocation, OutputParser, Stream, TailBuffer
from orchard.agents.requirements import agent_environment
from orchard.core.feedback import BASELINE_RED, REFUSED, compose_prompt, failure_feedback, verify_feedback
from orchard.core.journal import AgentExit, Verdict, VerifyRun
from orchard.core.model import AgentSpec, Environment, Outcome, Task
from orchard.errors import GitError
from orchard.runtime.context import Host
from orchard.runtime.dryrun import NOOP, empty_change
from orchard.runtime.environment import PhaseResult, copy_included, included_files, run_phase, setup_stamp
from orchard.runtime.guardrails import Resolution, guard, start_resolution
from orchard.runtime.outbox import prepare_outbox, read_summary
from orchard.runtime.process import Supervision, append_log, run_process
from orchard.runtime.programs import program_problem
from orchard.runtime.resources import task_variables
from orchard.runtime.sandbox import Confinement, Sandboxing, box_for, confine, sandboxed_exit
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
                          Outcome.CANCELLED, Outcome.LOST})


@dataclass(frozen=True)
class AttemptJob:
    """One attempt as its host needs it: the task, its agent, where its files go, the commit it starts from, and
    what the run knew when it started (feedback, what the dependencies did, what other tasks merged)."""

    run_id: str
    task: Task
    number: int
    agent_name: str
    agent: AgentSpec
    sandboxing: Sandboxing
    environment: Environment
    branch: str
    link: Path  # the task's worktree link (`layout.worktree`); the pool's directory it leads to is the worktree
    log_path: Path
    prompt_file: Path
    outbox: Path  # the one directory of orchard's its agent may write (`runtime.outbox`)
    tip: str  # the integration tip it starts from
    feedback: str = ""
    context: str = ""  # what the tasks it builds on did (`runtime.parents`)
    theirs: str | None = None  # the previous result to merge in for the agent to resolve (`on_conflict: resolve`)
    session_id: str | None = None  # the agent's session of the task's last attempt, to resume
    budget_usd: float | None = None
    slot: int = 0
    port: int | None = None
    merged: tuple[tuple[str, str], ...] = ()  # (task, merge commit) of the others merged so far: `protect_merged`
    red_on_base: bool = False  # its verify fails on the untouched base too (the preflight)
    park: int = 1  # how many finished worktrees the host's pool keeps parked
    output: bool = False  # every line the agent writes goes to the sink too (`AgentOutput` for observers)
    token: str = ""  # this attempt's alone: what its host says of it carries it, and the store records it

    @property
    def key(self) -> str:
        return f"{self.task.id}/{self.number}"


class AttemptSink(Protocol):
    """What the workspace tells of an attempt as it goes, in order; the driver journals it (`runtime.attempt`)."""

    def placed(self, host: str) -> None:
        """The executor put the attempt on `host` (a machine of a cluster; never said by the host itself)."""

    def repaired(self, paths: list[str], when: str) -> None:
        """orchard's git directory on the host had been changed, and was put back."""

    def started(self, worktree: Path, start_commit: str) -> None:
        """The worktree is prepared; setup and the agent come next."""

    def setup_started(self, command: str) -> None: ...

    def setup_finished(self, *, passed: bool, skipped: bool, duration_s: float, detail: str) -> None: ...

    def activity(self, text: str) -> None:
        """What the agent (or a setup command) is doing now; at most one a second."""

    def output(self, stream: Stream, line: str) -> None:
        """A line the agent wrote, redacted (only when the job's run asked for every line)."""

    def spawned(self, pid: int) -> None: ...

    def agent_exited(self, exited: AgentExit) -> None: ...

    def verifying(self) -> None: ...

    def verify_finished(self, run: VerifyRun) -> None: ...

    def warned(self, text: str, others: tuple[str, ...]) -> None:
        """The result removed lines the tasks `others` merged (`protect_merged: warn`)."""

    def noted(self, text: str) -> None:
        """A warning for the user, one they must act on (an unconfined agent changed their repository)."""

    def teardown_finished(self, *, passed: bool, duration_s: float, detail: str) -> None: ...


@dataclass(frozen=True)
class WorkspaceResult:
    """How the attempt ended: its verdict; whether it started at all (False: no worktree, nothing ran); the agent's
    report; whether the environment's setup (not the agent) failed."""

    verdict: Verdict
    started: bool = True
    report: AttemptReport | None = None
    setup_failed: bool = False


@dataclass(frozen=True)
class _Live:
    """The attempt once its worktree is prepared."""

    job: AttemptJob
    worktree: Path
    start_commit: str
    included: tuple[str, ...]  # files copied from the user's checkout (`runtime.environment`): never committed
    variables: tuple[tuple[str, str], ...]  # its slot, ports and `environment.env` (`runtime.resources`)
    deadline: float  # monotonic: the task's `timeout` bounds the agent and its verify together
    resolution: Resolution | None

    @property
    def task(self) -> Task:
        return self.job.task

    def box(self, host: Host, *, prompt_file: Path | None = None, outbox: Path | None = None) -> Confinement | None:
        return box_for(host, self.job.agent, self.job.sandboxing, run_id=self.job.run_id, worktree=self.worktree,
                       prompt_file=prompt_file, outbox=outbox)

    def env(self) -> dict[str, str]:
        return attempt_variables(self.job.run_id, self.task.id, self.job.number, self.worktree, self.variables)


class ActivityThrottle:
    """Passes on at most one activity line per interval (the dashboard only shows the latest)."""

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


async def run_workspace(job: AttemptJob, host: Host, sink: AttemptSink) -> WorkspaceResult:
    """Run the attempt on `host` to an outcome."""
    try:
        live, repaired = await asyncio.to_thread(_prepare, job, host)
    except (GitError, OSError) as exc:
        outcome = Outcome.INTERRUPTED if host.processes.stopping else Outcome.SETUP_FAILED  # a hard stop kills git
        return WorkspaceResult(verdict(outcome, f"cannot prepare worktree: {exc}"), started=False)
    if repaired:
        sink.repaired(repaired, "before task " + job.task.id + " started")
    actx = _agent_context(job, live)
    agent = _invocation(actx, live.variables)  # None: a dry run's noop agent (`runtime.dryrun`): no process
    sink.started(live.worktree, live.start_commit)
    watch = None if job.sandboxing.confined else host.watch
    if watch is not None:  # an unconfined attempt is a suspect from now on
        watch.running.add(job.key)
    before = await asyncio.to_thread(watch.status) if watch is not None else ""
    report: AttemptReport | None = None
    try:
        setup = await _phase(host, live, sink, "setup")
        if setup.passed and job.environment.setup:  # what setup made is never committed
            made = await asyncio.to_thread(untracked_tops, live.worktree)
            live = replace(live, included=(*live.included, *made))
        if setup.passed:
            report = await (_run_agent(host, live, sink, *agent) if agent else empty_change(
                host.git, task_id=job.task.id, number=job.number, agent=job.agent_name, log_path=job.log_path,
                branch=job.branch, start=live.start_commit, exited=sink.agent_exited))
            result = await _judge(host, live, sink, report)
        elif halted := host.processes.halted(job.task.id):  # stopped from outside: no verdict on the environment
            result = verdict(halted, f"{halted} during setup")
        else:
            result = verdict(Outcome.SETUP_FAILED, setup.detail)
    finally:
        if watch is not None:
            watch.running.discard(job.key)
        await _phase(host, live, sink, "teardown")  # whatever the outcome, a first Ctrl-C too; never the outcome
    if watch is not None:
        suspects = sorted({job.key, *watch.running})
        changed, touched = await asyncio.to_thread(_outside_changes, watch, live, before)
        result = _judge_outside(live, sink, suspects, changed, touched, result)
    if result.outcome is Outcome.SUCCESS:  # the merge works on the commit: the worktree can serve the next task
        await asyncio.to_thread(host.pool.release, job.link, job.park)
    return WorkspaceResult(result, report=report,
                           setup_failed=result.outcome is Outcome.SETUP_FAILED and not setup.passed)


def _prepare(job: AttemptJob, host: Host) -> tuple[_Live, list[str]]:
    """orchard's repository as orchard wrote it (returns what was repaired), then a clean worktree on the task
    branch at the job's tip, with the files its environment includes and, to resolve a conflict, the previous
    result merged in (worker thread)."""
    repaired = host.own.restore()
    worktree = host.pool.acquire(job.link, job.branch, job.tip)
    resolution = start_resolution(host.git, worktree, job.tip, job.theirs) if job.theirs else None
    wanted = included_files(host.user_repo, job.environment)
    included = tuple(copy_included(host.user_repo, worktree, wanted))
    variables = task_variables(run_id=job.run_id, task_id=job.task.id, root=str(host.user_repo.root),
                               worktree=str(worktree), slot=job.slot, port=job.port, environment=job.environment)
    return _Live(job, worktree, job.tip, included, tuple(variables.items()),
                 time.monotonic() + job.task.timeout_s, resolution), repaired


def _agent_context(job: AttemptJob, live: _Live) -> AttemptContext:
    """Write the attempt's prompt (the task's, what its dependencies did, feedback from the last attempt or the
    conflict to resolve), make its outbox, and describe both to the adapter."""
    feedback = job.feedback
    if live.resolution is not None:  # what to resolve, and why the last resolution was refused if it was
        refused = feedback if feedback.startswith(REFUSED) else ""
        feedback = live.resolution.note + (f"\n\n{refused}" if refused else "")
    prompt = compose_prompt(job.task.prompt, feedback, job.number, job.context)
    prepare_outbox(job.outbox)
    job.prompt_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    job.prompt_file.write_text(prompt, encoding="utf-8")
    job.prompt_file.chmod(0o600)
    return AttemptContext(run_id=job.run_id, task=job.task, attempt=job.number, agent=job.agent,
                          worktree=live.worktree, prompt=prompt, prompt_file=job.prompt_file, feedback=feedback,
                          session_id=job.session_id, budget_usd=job.budget_usd, outbox=job.outbox,
                          confined=job.sandboxing.confined)


def _invocation(actx: AttemptContext, variables: tuple[tuple[str, str], ...]
                ) -> tuple[Invocation, OutputParser] | None:
    """What the agent's adapter runs for the attempt (with the task's variables) and the parser of its output; None
    for a dry run's noop agent, which runs nothing."""
    if actx.agent.type == NOOP:
        return None
    adapter = adapter_for(actx.agent.type)
    inv = adapter.invocation(actx)
    return replace(inv, env={**inv.env, **dict(variables)}), adapter.parser(actx)


async def _phase(host: Host, live: _Live, sink: AttemptSink, phase: str) -> PhaseResult:
    """The attempt's environment `setup` or `teardown` (passed when there is none), told with its time."""
    environment = live.job.environment
    commands = environment.setup if phase == "setup" else environment.teardown
    if not commands:
        return PhaseResult(True)
    if phase == "teardown":
        result = await _run_phase(host, live, sink, phase, commands)
        sink.teardown_finished(passed=result.passed, duration_s=result.duration_s, detail=result.detail)
        return result
    stamp = await asyncio.to_thread(setup_stamp, host, live.worktree, environment)
    if stamp.current:
        append_log(live.job.log_path, "[orchard: setup skipped: its inputs are as when this worktree last ran it]\n")
        sink.setup_finished(passed=True, skipped=True, duration_s=0.0, detail="")
        return PhaseResult(True, skipped=True)
    sink.setup_started(shlex.join(commands[0]))
    result = await _run_phase(host, live, sink, phase, commands)
    stamp.save(result.passed)
    sink.setup_finished(passed=result.passed, skipped=False, duration_s=result.duration_s, detail=result.detail)
    return result


async def _run_phase(host: Host, live: _Live, sink: AttemptSink, phase: str,
                     commands: tuple[tuple[str, ...], ...]) -> PhaseResult:
    def on_command(index: int, argv: tuple[str, ...]) -> None:
        if index:  # the first is in `setup.started`; the dashboard shows the command running now
            sink.activity(f"{phase}: {shlex.join(argv)}")

    return await run_phase(host, phase=phase, commands=commands, task_id=live.task.id, box=live.box(host),
                           worktree=live.worktree, log_path=live.job.log_path, env=live.env(),
                           timeout_s=live.job.environment.setup_timeout_s, on_command=on_command)


async def _run_agent(host: Host, live: _Live, sink: AttemptSink, inv: Invocation,
                     parser: OutputParser) -> AttemptReport:
    """The agent process under supervision, its output parsed as it comes; its exit and spending told."""
    job, task = live.job, live.task
    throttle = ActivityThrottle(sink.activity)

    def on_line(line: str, stream: Stream) -> None:
        if job.output:
            sink.output(stream, host.redactor(line))
        activity = parser.feed(line, stream)
        if activity:
            throttle.offer(activity)

    def on_spawn(pid: int) -> None:
        host.processes.started(task.id, pid)
        sink.spawned(pid)

    box = live.box(host, prompt_file=job.prompt_file, outbox=job.outbox)
    where = " (in bwrap)" if box else ""
    append_log(job.log_path, host.redactor(f"[orchard: attempt {job.number} on {job.agent_name}{where}: "
                                           f"{shlex.join(inv.argv)}]\n"))
    stall = float(job.agent.option("stall_timeout", DEFAULT_STALL_S))
    limits = Supervision(task.timeout_s, stall, host.processes.grace_s)
    exit_info = await run_process(confine(inv, box), job.log_path, on_line, limits, on_spawn=on_spawn,
                                  base_env=agent_environment(os.environ, job.agent.type,
                                                             job.agent.option("env_pass")),
                                  redact=host.redactor.bytes, stop=host.processes.stop_for(task.id))
    exit_info = sandboxed_exit(exit_info) if box else exit_info
    host.processes.ended(task.id)
    report = parser.finish(exit_info)
    if report.outcome is Outcome.SUCCESS and not report.summary:  # a command agent's own account, if it left one
        report = replace(report, summary=await asyncio.to_thread(read_summary, job.outbox))
    sink.agent_exited(AgentExit(
        exit_code=exit_info.returncode, signal=exit_info.signal, duration_s=exit_info.duration_s,
        tokens_in=report.tokens_in, tokens_out=report.tokens_out, cost_usd=report.cost_usd,
        session_id=report.session_id, summary=report.summary))
    return report


async def _judge(host: Host, live: _Live, sink: AttemptSink, report: AttemptReport) -> Verdict:
    """The attempt's verdict: the agent's own, else what its committed result and the verify command say."""
    if report.outcome is not Outcome.SUCCESS:
        if halted := host.processes.halted(live.task.id):
            return verdict(halted, "run interrupted" if halted is Outcome.INTERRUPTED else "cancelled")
        return verdict(report.outcome, report.detail)
    result = await _collect(host, live, sink, report.detail)
    result, warning = await guard(host.git, task=live.task, start=live.start_commit, resolution=live.resolution,
                                  result=result, merged=dict(live.job.merged))
    if warning is not None:
        sink.warned(warning.text, warning.others)
    if result.outcome is Outcome.SUCCESS and live.task.verify and live.worktree.is_dir():
        sink.verifying()
        return await _verify(host, live, sink, result)
    return result


async def _collect(host: Host, live: _Live, sink: AttemptSink, detail: str) -> Verdict:
    """After a successful agent: commit leftovers, and take the result from the task branch only."""
    job, wt, ref = live.job, live.worktree, "refs/heads/" + live.job.branch
    try:
        if wt.is_dir():
            on_branch = await asyncio.to_thread(worktree_branch, wt)
            if on_branch != ref:
                return verdict(Outcome.REJECTED, f"the agent left the worktree on {on_branch or 'a detached HEAD'}, "
                                                 f"not {job.branch}")
            # what git reads when committing (config: filters; info: attributes) is orchard's again first
            repaired = await asyncio.to_thread(host.own.restore)
            if repaired:
                sink.repaired(repaired, f"after task {job.task.id}'s agent")
            await asyncio.to_thread(commit_all, wt, f"orchard: task {job.task.id} (attempt {job.number})",
                                    leave_out=live.included)
        head = await asyncio.to_thread(tip_descending_from, host.git, ref, live.start_commit)
        if head is not None and live.included:
            head = await asyncio.to_thread(_leave_out_included, host, live, head)
    except GitError as exc:
        if host.processes.stopping:  # a hard stop killed git: the attempt is interrupted, not failed
            return verdict(Outcome.INTERRUPTED, f"run interrupted while committing: {exc}")
        return verdict(Outcome.SETUP_FAILED, f"cannot commit the agent's work: {exc}")
    if head is None:
        return verdict(Outcome.REJECTED, f"task branch {job.branch} no longer descends from the attempt's start")
    if head == live.start_commit and not job.task.allow_empty:
        return verdict(Outcome.NO_CHANGES, "no changes", head)
    return verdict(Outcome.SUCCESS, detail, head)


def _leave_out_included(host: Host, live: _Live, head: str) -> str:
    """The result without the files the environment included, should the agent have committed them itself: one
    commit on the start with the result's tree less those files (its own commits would keep them in history)."""
    job = live.job
    committed = paths_changed(host.git, live.start_commit, head, live.included)
    if not committed:
        return head
    tree = tree_without(host.git, head, committed)
    message = (f"orchard: task {job.task.id} (attempt {job.number})\n\nThe agent's commits, without the "
               f"environment's files it committed ({len(committed)}).\n")
    squashed = commit_tree(host.git, tree, (live.start_commit,), message)
    if not set_ref(host.git, "refs/heads/" + job.branch, squashed, head, "orchard: leave environment files out"):
        raise GitError(["update-ref", job.branch], 1, "the task branch moved while orchard left files out")
    return squashed


async def _verify(host: Host, live: _Live, sink: AttemptSink, collected: Verdict) -> Verdict:
    """Run the task's verify command in its worktree; a failure's output tail becomes the next attempt's feedback."""
    job, task = live.job, live.task
    assert task.verify is not None
    tail = TailBuffer(lines=40)
    box = live.box(host)
    append_log(job.log_path, host.redactor(f"\n[orchard: verify{' (in bwrap)' if box else ''}: "
                                           f"{shlex.join(task.verify)}]\n"))
    env = live.env()
    inv = confine(Invocation(task.verify, live.worktree, env=env), box)
    base_env = agent_environment(host.environ, "", task.verify_env_pass)
    exit_info = await run_process(inv, job.log_path, lambda line, _s: tail.add(line),
                                  Supervision(max(0.1, live.deadline - time.monotonic()), None,
                                              host.processes.grace_s),
                                  on_spawn=lambda pid: host.processes.started(task.id, pid),
                                  base_env=base_env, redact=host.redactor.bytes,
                                  stop=host.processes.stop_for(task.id))
    exit_info = sandboxed_exit(exit_info) if box else exit_info
    host.processes.ended(task.id)
    passed = exit_info.returncode == 0 and not exit_info.spawn_error
    output = exit_info.spawn_error or tail.text()
    halted = None if passed else host.processes.halted(task.id)
    feedback = None if passed or halted else verify_feedback(task.verify, exit_info.returncode, output,
                                                              red_on_base=job.red_on_base)
    sink.verify_finished(VerifyRun(passed=passed, exit_code=exit_info.returncode, duration_s=exit_info.duration_s,
                                   tail=output, feedback=feedback))
    if passed:
        return collected
    if halted:
        return verdict(halted, f"{halted} during verify", collected.end_commit)
    if exit_info.timed_out:
        return verdict(Outcome.TIMEOUT, f"verify timed out: the task's timeout ({task.timeout_s:g}s) bounds the agent "
                                        "and its verify together", collected.end_commit)
    # a misspelt program reads as such, not as "exit None" (the sandbox's own exit hides which it was)
    problem = program_problem(task.verify[0], cwd=live.worktree, path={**base_env, **env}.get("PATH"))
    if problem:
        return verdict(Outcome.VERIFY_FAILED, f"verify program {problem}: {task.verify[0]}", collected.end_commit)
    also = f"; {BASELINE_RED}: it failed on the base too" if job.red_on_base else ""
    return verdict(Outcome.VERIFY_FAILED, f"verify failed (exit {exit_info.returncode}{also})", collected.end_commit)


def _outside_changes(watch: OutsideWatch, live: _Live, before: str) -> tuple[list[str], list[str]]:
    """After an unconfined attempt (in a worker thread): its adopted daemons killed; what changed in the user's git
    directory (put back) and in the user's checkout."""
    job = live.job
    reap_adopted(of_attempt(job.run_id, job.task.id, job.number, live.worktree))
    return watch.restore(), changed_entries(before, watch.status())


def _judge_outside(live: _Live, sink: AttemptSink, suspects: list[str], changed: list[str], touched: list[str],
                   result: Verdict) -> Verdict:
    """Say what unconfined agents changed outside their worktrees; `tampered` if this attempt changed the user's git
    directory and was the only unconfined one running."""
    if changed:
        sink.noted(f"{', '.join(changed)} in your repository's git directory changed while unconfined agents ran "
                   f"({', '.join(suspects)}): put back as it was")
    if touched:
        shown = ", ".join(touched[:20]) + (f" (+{len(touched) - 20} more)" if len(touched) > 20 else "")
        sink.noted(f"your checkout changed while unconfined agents ran ({', '.join(suspects)}): {shown}")
    if changed and suspects == [live.job.key]:
        return verdict(Outcome.TAMPERED, f"the agent changed the user's git directory: {', '.join(changed)}")
    return result


def attempt_variables(run_id: str, task_id: str, number: int, worktree: Path,
                      variables: tuple[tuple[str, str], ...] | Mapping[str, str]) -> dict[str, str]:
    """What setup, verify and teardown are told of their attempt (the run id also lets a resume find them if
    orchard dies), with the task's resources."""
    return {"ORCHARD_RUN_ID": run_id, "ORCHARD_TASK_ID": task_id, "ORCHARD_ATTEMPT": str(number),
            "ORCHARD_WORKTREE": str(worktree), **dict(variables)}
