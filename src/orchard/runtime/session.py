"""Starting, resuming and finishing runs: checks, the repository lock, the journal, signals, recovery.

This is the library's entry point below `orchard.run`; the CLI calls the same functions. A run's records live in
`.orchard/state.db` unless the caller passes other `Records` (`orchard.testing.MemoryStore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchard.agents.requirements import recordable_environment
from orchard.core.gate_state import ungated_tip_problem
from orchard.core.journal import Observer, Records
from orchard.core.model import NO_LIMITS, Limits, Plan, RunStatus, TaskStatus
from orchard.core.notify import webhook_secrets
from orchard.core.redact import Redactor
from orchard.core.results import TaskResult, task_results
from orchard.core.scheduler import RunDone
from orchard.core.steering import Extender, Reloader
from orchard.core.transitions import Journal
from orchard.errors import DiskFull, GitError, GitTimeout, OrchardError, UngatedTip, UsageError, VcsError
from orchard.runtime.compat import attach as attach_workstream_files
from orchard.runtime.context import Integration, RunContext, note_repaired
from orchard.runtime.disk import DiskLimits, collect_worktrees, require_free_space
from orchard.runtime.dryrun import DRY_RUN_NOTE, NOOP, check_dry_run, dry_run_plan, remove_run
from orchard.runtime.engine import Engine
from orchard.runtime.estimates import with_history
from orchard.runtime.executor import ExecutorFactory
from orchard.runtime.gate import checked_candidates
from orchard.runtime.imports import import_traps, strict_refusal
from orchard.runtime.integration import note_restored
from orchard.runtime.layout import Layout, integration_branch
from orchard.runtime.lock import RunLock
from orchard.runtime.notify import Notifier
from orchard.runtime.preflight import preflight_owed, run_preflight
from orchard.runtime.programs import missing_programs, uncommitted_warning
from orchard.runtime.publish import mirror_or_note
from orchard.runtime.recovery import (
    check_resettable,
    reap_orphans,
    reconcile,
    reload_plan,
    settle,
    tear_down_left,
    trusted_tip,
)
from orchard.runtime.sandbox import mode_for, sandbox_warnings
from orchard.runtime.unconfined import OutsideWatch, children, reap_adopted, set_subreaper
from orchard.store import Store
from orchard.vcs import (
    Repo,
    create_branch,
    find_repo,
    head_ref,
    land,
    list_worktrees,
    remove_worktree,
    require_git,
    resolve_commit,
)
from orchard.vcs.private import OwnRepository, open_own_repository, remove_stale_locks, user_locks


@dataclass(frozen=True)
class RunResult:
    """How a run ended: its id, final status (whose exit code is the command's), the summary figures, every
    task's result in plan order, and with `land`, what landing did ("" when it did not land)."""

    run_id: str
    status: RunStatus
    exit_code: int
    summary: dict[str, Any]
    tasks: tuple[TaskResult, ...] = ()
    landed: str = ""  # e.g. "landed orchard/<run>/integration on main: fast-forward"

    def task(self, task_id: str) -> TaskResult:
        """The result of one task (KeyError naming it when the run has none such)."""
        for result in self.tasks:
            if result.id == task_id:
                return result
        raise KeyError(task_id)

    @property
    def failed(self) -> tuple[TaskResult, ...]:
        """The tasks that did not merge (failed, conflict, blocked, cancelled or left waiting)."""
        return tuple(t for t in self.tasks if not t.merged)


@dataclass(frozen=True)
class Options:
    """What a session may be told beyond the plan: progress observers, the records, landing, disk limits, and the
    machine's limits given as flags (over the plan's `limits`)."""

    observers: tuple[Observer, ...] = ()
    records: Records | None = None  # default: the repository's `.orchard/state.db`
    land: bool = False
    limits: DiskLimits | None = None
    machine: Limits = NO_LIMITS
    log_file: str | None = None  # `compat: workstreams`: the log's path (relative to the repository root)
    output: bool = False  # observers get every line agents write (`AgentOutput`)
    dry_run: bool = False  # the plan's dry run (`runtime.dryrun`), removed at the end; needs `records` (in memory)
    extend: Extender | None = None  # what reads tasks `orchard add` adds to the live run (`plan.extend.add_tasks`)
    reload: Reloader | None = None  # resume/retry: the plan file as it is now (`plan.extend.FileReloader`)
    executor: ExecutorFactory | None = None  # where attempts' workspace halves run (`runtime.executor`); None: here


def open_repo(path: str | Path | None) -> tuple[Repo, Layout]:
    """Find the repository containing `path`, check git, and prepare its `.orchard/` directory."""
    require_git()
    repo = find_repo(Path(path or ".").resolve())
    layout = Layout.for_repo(repo.root)
    layout.ensure()
    return repo, layout


def redactor_for(plan: Plan) -> Redactor:
    """Secrets: orchard's environment, the agents' `env`, the plan's `redact` names, what of a `notify` webhook's URL
    follows its host."""
    webhooks = webhook_secrets([entry.webhook for entry in plan.notify])
    envs = [os.environ, *[dict(a.option("env", {}) or {}) for a in plan.agents.values()], webhooks]
    return Redactor.from_environments(envs, (*plan.redact, *webhooks))


def new_run_id() -> str:
    # 48 random bits: two runs started in the same second (on any number of repositories) share an id with a
    # chance of about one in 10^14; kills check the repository as well (`recovery.reap_orphans`)
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(6)


@contextlib.asynccontextmanager
async def _session(repo_path: str | Path | None,
                   options: Options) -> AsyncIterator[tuple[OwnRepository, Layout, Records, DiskLimits]]:
    """orchard's repository beside the user's, the records and limits for one session; the records are closed
    after if orchard opened them."""
    repo, layout = open_repo(repo_path)
    limits = options.limits or DiskLimits.parse(None, None)
    require_free_space(repo.root, limits)
    own = open_own_repository(repo, layout.git_dir)
    _forget_legacy_worktrees(repo, layout)
    if options.records is not None:
        yield own, layout, options.records, limits
        return
    store = Store(layout.state_db)
    try:
        yield own, layout, store, limits
    finally:
        store.close()


def _forget_legacy_worktrees(repo: Repo, layout: Layout) -> None:
    """Worktrees an orchard before its own repository registered in the user's repository: removed, so the user's
    `git worktree list` holds only their own (orchard's repository makes new ones)."""
    root = layout.root.resolve()
    for worktree in list_worktrees(repo):
        if root in worktree.path.resolve().parents:
            with contextlib.suppress(GitError, OSError):
                remove_worktree(repo, worktree.path)


def _context(own: OwnRepository, layout: Layout, journal: Journal, *, tip: str, width: int,
             options: Options) -> RunContext:
    """The session's shared handles (with `options.output`, agents' lines go to the observers too)."""
    return RunContext(own, layout, journal, Integration("refs/heads/" + integration_branch(journal.run_id), tip),
                      redactor=redactor_for(journal.plan), width=width, output_events=options.output,
                      extend=options.extend)


async def start_run(repo_path: str | Path | None, plan: Plan, *, parallel: int | None = None,
                    base: str | None = None, options: Options = Options()) -> RunResult:
    """Create the integration branch at the base and run the plan to the end (its dry run with `dry_run`)."""
    if options.dry_run:
        check_dry_run(land=options.land, records_given=options.records is not None)
        plan = dry_run_plan(plan)
    async with _session(repo_path, options) as (own, layout, records, limits), contextlib.AsyncExitStack() as ends:
        limits, machine = _limits(plan, options, limits)
        require_free_space(own.user.root, limits)  # again, should the plan's `limits` ask for more
        traps = import_traps(own.user.root, plan)
        if traps and plan.preflight == "strict":
            raise strict_refusal(traps)
        plan, _ = with_history(plan, records)  # the scheduler's critical path and the snapshot keep them
        run_id = new_run_id()
        lock = RunLock(layout.lock_file)
        lock.acquire(run_id)
        try:
            unlocked = remove_stale_locks(own)
            collected = collect_worktrees(own.repo, layout, limits, run_id)
            branch, head = head_ref(own.user)
            base_name = base or plan.base or branch or head
            base_commit = resolve_commit(own.user, base_name)
            width = parallel or plan.parallel
            journal = open_journal(records, run_id, plan=plan, observers=options.observers)
            _workstream_files(plan, journal, own.user, options, ends)
            _notify(journal, plan, layout, own.user, ends)
            # recorded first: a kill between the two leaves a run to resume (whose guard creates the branch), never
            # an integration branch nothing knows about
            redactor = redactor_for(plan)
            journal.run_started(plan=plan, base=base_name, base_commit=base_commit,
                                integration_branch=integration_branch(run_id), parallel=width, pid=os.getpid(),
                                environment=recordable_environment(os.environ, lambda v: redactor(v) != v))
            create_branch(own.repo, integration_branch(run_id), base_commit)
            ctx = _context(own, layout, journal, tip=base_commit, width=width, options=options)
            width = _executor(ctx, options, ends)
            if options.dry_run:
                ctx.journal.noted(DRY_RUN_NOTE)
            await mirror_or_note(ctx)  # the user sees the run's branch from the start
            note_collected(ctx, collected)
            note_sandbox(ctx)
            note_locks(ctx, unlocked)
            note_checkout(ctx)
            for trap in traps:
                ctx.journal.noted(trap.message(), level="warning")
            engine = Engine(ctx, width, min_free=limits.min_free, limits=machine)
            return await _drive(ctx, engine, options, limits, preflight=True)
        finally:
            try:
                if options.dry_run:
                    remove_run(own, layout, run_id)
            finally:
                lock.release()


async def resume_run(repo_path: str | Path | None, run_id: str | None, *, reset: tuple[str, ...] = (),
                     options: Options = Options()) -> RunResult:
    """Continue an interrupted run: merged tasks never run again, interrupted attempts restart cleanly.

    `reset` names tasks to try afresh (`orchard retry`): they and the tasks they blocked go back to pending.
    """
    async with _session(repo_path, options) as (own, layout, records, limits), contextlib.AsyncExitStack() as ends:
        run = records.run(run_id)
        limits, machine = _limits(records.plan(run.id), options, limits)
        require_free_space(own.user.root, limits)
        lock = RunLock(layout.lock_file)
        lock.acquire(run.id)
        try:
            collected = collect_worktrees(own.repo, layout, limits, run.id)
            journal = open_journal(records, run.id, observers=options.observers)
            reset = reload_plan(journal, options.reload, _with_cancelled(journal, reset))
            _check_resumable(journal, reset)
            _workstream_files(journal.plan, journal, own.user, options, ends)
            _notify(journal, journal.plan, layout, own.user, ends)
            last_seen = journal.last_event_ts() or time.time()  # when the dead session last did anything
            reaped = reap_orphans(journal, layout.root)  # first: what is left of the dead session stops writing
            unlocked = remove_stale_locks(own)
            found = trusted_tip(own.repo, run, "refs/heads/" + run.integration_branch,
                                checked=checked_candidates(journal))
            journal.run_resumed(pid=os.getpid(), integration_tip=found.tip)
            ctx = _context(own, layout, journal, tip=found.tip, width=run.parallel, options=options)
            width = _executor(ctx, options, ends)
            note_collected(ctx, collected)
            note_sandbox(ctx)
            if reaped:
                journal.noted(f"killed {reaped} leftover process(es) of the previous session", level="warning")
            note_locks(ctx, unlocked)
            await tear_down_left(ctx)
            restored = reconcile(ctx, found, last_seen=last_seen, reset=reset)
            engine = Engine(ctx, width, restored, min_free=limits.min_free, limits=machine)
            owed = preflight_owed(ctx)  # stopped by it, or a crash cut it short
            return await _drive(ctx, engine, options, limits, preflight=owed)
        finally:
            lock.release()


def _limits(plan: Plan, options: Options, disk: DiskLimits) -> tuple[DiskLimits, Limits]:
    """The session's disk limits (a plan's `limits.min_free_disk` where no flag or variable set one; the run is
    refused below it) and the machine's limits new attempts wait for: flags over the plan's, the disk's only when
    set somewhere (by default a full disk stops a run, as always, and holds nothing)."""
    disk = disk.for_plan(plan.limits.min_free_disk)
    machine = options.machine.over(plan.limits)
    return disk, replace(machine, min_free_disk=disk.min_free if disk.min_free_set else None)


def note_locks(ctx: RunContext, removed: list[str]) -> None:
    """Say which stale locks orchard removed from its repository, and which in the user's repository stop it from
    publishing there (the user's to remove: a git of theirs may be running)."""
    if removed:
        ctx.journal.noted(f"removed {len(removed)} lock file(s) a killed git left in orchard's repository: "
                          + ", ".join(removed), level="warning")
    for path in user_locks(ctx.user_repo):
        ctx.journal.noted(f"{path} is locked, so orchard cannot update its branches in your repository; if no git "
                          f"is running there, remove the lock: rm -- '{path}'", level="warning", attention=True)


def open_journal(records: Records, run_id: str, *, plan: Plan | None = None,
                 observers: tuple[Observer, ...] = ()) -> Journal:
    """The journal of run `run_id` (a new one of `plan`, or one recorded), redacting the plan's secrets."""
    journal = Journal(records, run_id, clock=time.time, redact=redactor_for(plan or records.plan(run_id)))
    for observer in observers:
        journal.subscribe(observer)
    return journal


def _workstream_files(plan: Plan, journal: Journal, repo: Repo, options: Options,
                      ends: contextlib.AsyncExitStack) -> None:
    """`compat: workstreams`: the workstream guide's database and log (`runtime.compat`), closed with the session."""
    if plan.compat == "workstreams":
        ends.callback(attach_workstream_files(journal, repo.root, repo.git_dir, log_file=options.log_file).close)


def _notify(journal: Journal, plan: Plan, layout: Layout, repo: Repo, ends: contextlib.AsyncExitStack) -> None:
    """The plan's `notify:` (`runtime.notify`), told of the session's events; what is queued at its end is delivered
    (within the entries' timeouts) once the repository is unlocked."""
    notifier = Notifier.attach(journal, plan.notify, redactor=redactor_for(plan), cwd=repo.root, environ=os.environ,
                               log_path=layout.run_dir(journal.run_id) / "notify.log")
    if notifier is not None:
        ends.push_async_callback(notifier.close)


def _executor(ctx: RunContext, options: Options, ends: contextlib.AsyncExitStack) -> int:
    """The session's executor, when the options give one (closed with the session); returns the run's width, no
    more than the attempts it can run at once."""
    if options.executor is None:
        return ctx.width
    executor = options.executor(ctx)
    ends.callback(executor.close)
    ctx.executor = executor
    slots = executor.slots()
    if slots is not None and slots < ctx.width:
        ctx.journal.noted(f"the executor has {slots} agent slot(s): at most {slots} of the run's {ctx.width} "
                          "tasks run at once", level="warning")
        ctx.width = slots
    return ctx.width


def _with_cancelled(journal: Journal, reset: tuple[str, ...]) -> tuple[str, ...]:
    """Resuming a cancelled run queues its cancelled tasks again (what had merged or failed stays so)."""
    if journal.run().status is not RunStatus.CANCELLED:
        return reset
    cancelled = tuple(t.task_id for t in journal.tasks() if t.status is TaskStatus.CANCELLED)
    return tuple(dict.fromkeys((*reset, *cancelled)))


def _check_resumable(journal: Journal, reset: tuple[str, ...]) -> None:
    """A run can go on unless it completed; a failed one only with a retry or work left."""
    status = journal.run().status
    unfinished = any(not t.status.terminal for t in journal.tasks())
    ended = status in (RunStatus.FAILED, RunStatus.CANCELLED)
    # a failed run none of whose tasks failed any more (a reload cancelled them) goes on, to end as it now stands
    settled = not any(t.status.failed for t in journal.tasks()) and status is RunStatus.FAILED
    if not status.resumable or (ended and not reset and not unfinished and not settled):
        raise UsageError(f"run {journal.run_id} is {status}; nothing to resume")
    check_resettable(journal, reset)


def note_sandbox(ctx: RunContext) -> None:
    """Say when `sandbox: auto` leaves agents unconfined on this machine."""
    for warning in sandbox_warnings(ctx.plan):
        ctx.journal.noted(warning, level="warning")


def note_checkout(ctx: RunContext) -> None:
    """Before any agent starts: the plan's programs that cannot be started, and files the checkout has that no
    commit does (the plan's first: tasks start from a commit and will not see them)."""
    for missing in missing_programs(ctx.plan, ctx.user_repo.root):
        ctx.journal.noted(missing.message(), level="warning")
    warning = uncommitted_warning(ctx.user_repo.root, ctx.plan)
    if warning:
        ctx.journal.noted(warning, level="warning")


def note_collected(ctx: RunContext, removed: list[Path]) -> None:
    """Say which kept worktrees were removed to stay under the size cap."""
    if removed:
        names = ", ".join(f"{p.parent.name}/{p.name}" for p in removed[:5]) + (" …" if len(removed) > 5 else "")
        ctx.journal.noted(f"removed {len(removed)} kept worktree(s) to stay under the size cap: {names}",
                          level="warning")


async def _drive(ctx: RunContext, engine: Engine, options: Options, limits: DiskLimits, *,
                 preflight: bool = False) -> RunResult:
    """Run the engine with signal handling (after the plan's preflight, for a new run), then record and report the
    end."""
    with _signals(engine, ctx), _unconfined(ctx):
        if preflight:
            await run_preflight(ctx)
        done = await engine.run()
        if engine.fatal is None:
            await _tidy(ctx, engine, limits)
    if engine.fatal is not None:
        raise _stopped_by(ctx, engine.fatal)
    status = final_status(ctx, done)
    refused, landed = await _land(ctx) if options.land and status is RunStatus.COMPLETED else (None, "")
    summary = ctx.journal.run_finished(status, reason=done.reason)
    if refused is not None:
        raise refused
    return RunResult(ctx.run_id, status, status.exit_code, summary,
                     tasks=task_results(ctx.journal.tasks(), ctx.journal.attempts()), landed=landed)


@contextlib.contextmanager
def _unconfined(ctx: RunContext) -> Iterator[None]:
    """For a session with agents that run unconfined: orchard adopts their daemons (a subreaper) and watches the
    user's repository (`runtime.unconfined`); at the end, every adopted process of the run is killed."""
    if all(spec.type == NOOP or mode_for(ctx.plan, spec) == "bwrap" for spec in ctx.plan.agents.values()):
        yield
        return
    ctx.host.watch = OutsideWatch.start(ctx.user_repo)
    spare, adopting = children(), set_subreaper(True)
    try:
        yield
    finally:
        if adopting:  # whatever is still a child now was adopted: an agent's daemon, however it hid
            reap_adopted(lambda _env, _cwd: True, spare=spare)
            set_subreaper(False)


def _stopped_by(ctx: RunContext, full: DiskFull) -> DiskFull:
    """The error a session that ran out of space ends with; the run's end is recorded if there is room left."""
    with contextlib.suppress(OrchardError, sqlite3.Error, OSError):
        ctx.journal.run_finished(RunStatus.INTERRUPTED, reason=f"disk full: {full}")
    return DiskFull(f"{full}. The run stopped, and nothing merged is lost: free some space, then run "
                    f"`orchard resume {ctx.run_id}`")


async def _tidy(ctx: RunContext, engine: Engine, limits: DiskLimits) -> None:
    """Put the ref back and remove what merged tasks left, publish the run's refs to the user's repository, trim the
    pool; a hard stop may cut this short (the next session finishes it), never the recording of how the run ended."""
    try:
        # a worktree kept for inspection is one the user may run git in: orchard's repository must be its own again
        note_repaired(ctx, await asyncio.to_thread(ctx.own.restore), "at the end of the session")
        if moved := await asyncio.to_thread(settle, ctx):
            note_restored(ctx, moved)
        await engine.publisher.flush()
        await asyncio.to_thread(ctx.pool.trim, ctx.width if limits.pool_size is None else limits.pool_size)
    except GitTimeout as exc:
        if not ctx.processes.stopping:
            raise
        ctx.journal.noted(f"tidying up was cut short by the interrupt: {exc}", level="warning")


async def _land(ctx: RunContext) -> tuple[OrchardError | None, str]:
    """`--land`: merge the integration branch into the base; a refusal is noted and returned, to raise once the
    run's end is recorded, else what landing did. A gated run lands only a tip that passed its gate."""
    run, gate = ctx.journal.run(), ctx.plan.gate
    problem = gate and ungated_tip_problem(ctx.journal.events(), tip=ctx.integration.tip, base=run.base_commit,
                                           command=shlex.join(gate.verify))
    if problem:
        ctx.journal.noted(f"did not land {run.integration_branch} on {run.base}: {problem}", level="warning",
                          attention=True)
        return UngatedTip(f"cannot land run {run.id}: {problem}"), ""
    try:
        outcome = await asyncio.to_thread(land, ctx.user_repo, run.integration_branch, run.base,
                                          marker=ctx.layout.land_marker)
    except VcsError as exc:
        ctx.journal.noted(f"did not land {run.integration_branch} on {run.base}: {exc}", level="warning",
                          attention=True)
        return exc, ""
    landed = f"landed {run.integration_branch} on {run.base}: {outcome}"
    ctx.journal.noted(landed)
    return None, landed


def final_status(ctx: RunContext, done: RunDone) -> RunStatus:
    """The run's status when its engine stopped: completed only when every task merged (see `TaskStatus.failed`)."""
    if not done.complete:
        return {"cancelled": RunStatus.CANCELLED, "budget_exhausted": RunStatus.BUDGET_EXHAUSTED}.get(
            done.reason, RunStatus.INTERRUPTED)
    if not any(t.status.failed for t in ctx.journal.tasks()):
        return RunStatus.COMPLETED
    return RunStatus.BUDGET_EXHAUSTED if done.reason == "budget_exhausted" else RunStatus.FAILED


@contextlib.contextmanager
def _signals(engine: Engine, ctx: RunContext) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop gracefully; second: kill at once. A pending `orchard cancel` cancels instead."""
    loop = asyncio.get_running_loop()
    count = [0]

    def handler(signum: int) -> None:
        count[0] += 1
        cancel = ctx.journal.run().cancel_requested
        ctx.journal.noted(("cancel requested" if cancel else f"interrupted by {signal.Signals(signum).name}")
                          + ("; killing agents" if count[0] > 1 else "; stopping agents, starting nothing new"),
                          level="warning")
        engine.stop(hard=count[0] > 1, cancel=cancel)

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, handler, sig)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
