"""Starting, resuming and finishing runs: checks, the repository lock, signals, reconciliation after a crash.

This is the library's entry point below `orchard.run`; the CLI calls the same functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from orchard.core.events import RunFinished, RunNote, RunStarted
from orchard.core.model import Plan, TaskStatus
from orchard.core.redact import Redactor
from orchard.core.scheduler import Restored, RunDone
from orchard.errors import UsageError
from orchard.runtime.attempt import note_restored
from orchard.runtime.context import Observer, RunContext
from orchard.runtime.disk import DiskLimits, collect_worktrees, require_free_space
from orchard.runtime.engine import Engine
from orchard.runtime.integration import recorded_tip
from orchard.runtime.layout import Layout, integration_branch
from orchard.runtime.lock import RunLock
from orchard.runtime.merging import settle
from orchard.runtime.process import kill_group
from orchard.store import Store, TaskRow
from orchard.store.summary import summarize
from orchard.vcs import Repo, create_branch, ensure_excluded, find_repo, head_ref, land, require_git, resolve_commit

EXIT_CODES = {"completed": 0, "failed": 1, "budget_exhausted": 1, "interrupted": 130, "cancelled": 130}
RESUMABLE = ("running", "interrupted", "failed", "budget_exhausted")


@dataclass(frozen=True)
class RunResult:
    """How a run ended: its id, final status, exit code and the summary figures."""

    run_id: str
    status: str
    exit_code: int
    summary: dict[str, Any]


def open_repo(path: str | Path | None) -> tuple[Repo, Layout, Store]:
    """Find the repository containing `path`, check git, and open its `.orchard/` store."""
    require_git()
    repo = find_repo(Path(path or ".").resolve())
    layout = Layout.for_repo(repo.root)
    layout.ensure()
    ensure_excluded(repo, "/.orchard/")
    return repo, layout, Store(layout.state_db)


def protect(ctx: RunContext) -> None:
    """Secrets (orchard's environment, the agents' `env`, the plan's `redact` names) never reach logs, the journal,
    events or reports; agents' own working files (aider's `.aider*`) never reach a commit."""
    envs = [os.environ, *[dict(a.option("env", {}) or {}) for a in ctx.plan.agents.values()]]
    ctx.redactor = Redactor.from_environments(envs, ctx.plan.redact)
    ctx.store.redact = ctx.redactor
    if any(a.type == "aider" for a in ctx.plan.agents.values()):
        ensure_excluded(ctx.repo, ".aider*")


def note_collected(ctx: RunContext, removed: list[Path]) -> None:
    """Say which kept worktrees were removed to stay under the size cap."""
    if removed:
        names = ", ".join(f"{p.parent.name}/{p.name}" for p in removed[:5]) + (" …" if len(removed) > 5 else "")
        ctx.emit(RunNote(run_id=ctx.run_id, ts=ctx.now(), level="warning",
                         text=f"removed {len(removed)} kept worktree(s) to stay under the size cap: {names}"))


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


async def start_run(repo_path: str | Path | None, plan: Plan, observers: list[Observer], parallel: int | None = None,
                    base: str | None = None, do_land: bool = False, limits: DiskLimits | None = None) -> RunResult:
    """Create the integration branch at the base and run the plan to the end."""
    repo, layout, store = open_repo(repo_path)
    limits = limits or DiskLimits.parse(None, None)
    require_free_space(repo.root, limits)
    run_id = new_run_id()
    lock = RunLock(layout.lock_file)
    lock.acquire(run_id)
    try:
        collected = collect_worktrees(repo, layout, limits, run_id)
        branch, head = head_ref(repo)
        base_name = base or plan.base or branch or head
        base_commit = resolve_commit(repo, base_name)
        width = parallel or plan.parallel
        # recorded first: a kill between the two leaves a run to resume (whose guard creates the branch), never an
        # integration branch nothing knows about
        store.create_run(run_id, plan, base_name, base_commit, integration_branch(run_id), width, time.time(),
                         os.getpid())
        create_branch(repo, integration_branch(run_id), base_commit)
        ctx = RunContext(repo, store, layout, plan, run_id, list(observers), integration_tip=base_commit,
                         width=width)
        protect(ctx)
        ctx.emit(RunStarted(run_id=run_id, ts=ctx.now(), base=base_name, base_commit=base_commit,
                            integration_branch=integration_branch(run_id), tasks=len(plan.tasks), parallel=width))
        note_collected(ctx, collected)
        return await _drive(ctx, Engine(ctx, width), do_land, limits)
    finally:
        lock.release()
        store.close()


async def resume_run(repo_path: str | Path | None, run_id: str | None, observers: list[Observer],
                     reset: tuple[str, ...] = (), do_land: bool = False, limits: DiskLimits | None = None) -> RunResult:
    """Continue an interrupted run: merged tasks never run again, interrupted attempts restart cleanly.

    `reset` names tasks to try afresh (`orchard retry`): they and the tasks they blocked go back to pending.
    """
    repo, layout, store = open_repo(repo_path)
    limits = limits or DiskLimits.parse(None, None)
    require_free_space(repo.root, limits)
    run = store.run(run_id)
    lock = RunLock(layout.lock_file)
    lock.acquire(run.id)
    try:
        collected = collect_worktrees(repo, layout, limits, run.id)
        if run.status not in RESUMABLE or (run.status == "failed" and not reset and not _unfinished(store, run.id)):
            raise UsageError(f"run {run.id} is {run.status}; nothing to resume")
        plan = store.plan(run.id)
        ctx = RunContext(repo, store, layout, plan, run.id, list(observers), width=run.parallel)
        protect(ctx)
        ctx.integration_tip = recorded_tip(ctx, run)
        store.update_run(run.id, integration_tip=ctx.integration_tip)
        reaped = reap_orphans(run.id, store)
        restored = _reconcile(store, run.id, reset)
        ctx.recovered_merges = frozenset(t for t, r in restored.items() if r.status is TaskStatus.MERGING)
        store.update_run(run.id, status="running", pid=os.getpid(), finished_at=None, cancel_requested=0)
        ctx.emit(RunStarted(run_id=run.id, ts=ctx.now(), base=run.base, base_commit=run.base_commit,
                            integration_branch=run.integration_branch, tasks=len(plan.tasks), parallel=run.parallel,
                            resumed=True))
        note_collected(ctx, collected)
        if reaped:
            ctx.emit(RunNote(run_id=run.id, ts=ctx.now(), level="warning",
                             text=f"killed {reaped} leftover process(es) of the previous session"))
        return await _drive(ctx, Engine(ctx, run.parallel, restored), do_land, limits)
    finally:
        lock.release()
        store.close()


def _unfinished(store: Store, run_id: str) -> bool:
    return any(not TaskStatus(t.status).terminal for t in store.tasks(run_id))


def _reconcile(store: Store, run_id: str, reset: tuple[str, ...]) -> dict[str, Restored]:
    """Close attempts the last session left open and decide where each task restarts."""
    rows = {t.task_id: t for t in store.tasks(run_id)}
    _check_resettable(run_id, rows, reset)
    last_seen = store.last_event_ts(run_id) or time.time()  # when the dead session last did anything
    for attempt in store.open_attempts(run_id):
        store.update_attempt(attempt.id, finished_at=max(attempt.started_at, last_seen), outcome="interrupted",
                             detail="orchestrator stopped")
    spent: dict[str, float] = {}
    for attempt in store.attempts(run_id):
        spent[attempt.task_id] = spent.get(attempt.task_id, 0.0) + attempt.cost_usd
    plan = store.plan(run_id)
    to_reset = set(reset)
    stack = list(reset)
    while stack:  # what the reset tasks blocked comes back too
        current = stack.pop()
        for t in plan.tasks:
            if current in t.depends_on and rows[t.id].status in ("blocked", "cancelled") and t.id not in to_reset:
                to_reset.add(t.id)
                stack.append(t.id)
    restored: dict[str, Restored] = {}
    for task_id, row in rows.items():
        status = TaskStatus(row.status)
        if task_id in to_reset:
            store.update_task(run_id, task_id, status="pending", failures=0, error="", finished_at=None)
            restored[task_id] = Restored(TaskStatus.PENDING, row.attempts, 0, spent.get(task_id, 0.0))
        elif status.terminal or status is TaskStatus.MERGING:
            restored[task_id] = Restored(status, row.attempts, row.failures, spent.get(task_id, 0.0))
        else:
            restored[task_id] = Restored(TaskStatus.PENDING, row.attempts, row.failures, spent.get(task_id, 0.0))
    return restored


def _check_resettable(run_id: str, rows: dict[str, TaskRow], reset: tuple[str, ...]) -> None:
    """Only existing, unmerged tasks can be retried: a merged task's changes are already in the integration branch,
    and running it again would apply them twice."""
    unknown = [t for t in reset if t not in rows]
    if unknown:
        raise UsageError(f"run {run_id} has no task {', '.join(repr(t) for t in unknown)}")
    merged = [t for t in reset if rows[t].status == "merged"]
    if merged:
        raise UsageError(f"run {run_id}: {', '.join(merged)} already merged; retry only failed, conflicted or "
                         "blocked tasks")


def reap_orphans(run_id: str, store: Store) -> int:
    """Kill the process groups of agents a dead orchestrator left running (found by their ORCHARD_RUN_ID)."""
    groups: set[int] = set()
    for attempt in store.attempts(run_id):
        if attempt.pgid and attempt.finished_at is None:
            groups.add(attempt.pgid)
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get("ORCHARD_RUN_ID") == run_id and proc.pid != os.getpid():
                groups.add(os.getpgid(proc.pid))
    killed = 0
    for pgid in groups:
        if pgid != os.getpgrp() and _group_belongs_to(pgid, run_id) and kill_group(pgid, signal.SIGKILL):
            killed += 1
    return killed


def _group_belongs_to(pgid: int, run_id: str) -> bool:
    """Only kill a recorded group if its leader still carries this run's id (pids can be reused)."""
    try:
        return bool(psutil.Process(pgid).environ().get("ORCHARD_RUN_ID") == run_id)
    except (psutil.Error, OSError):
        return False


async def _drive(ctx: RunContext, engine: Engine, do_land: bool, limits: DiskLimits) -> RunResult:
    """Run the engine with signal handling, then record and report the end."""
    with _signals(engine, ctx):
        done = await engine.run()
    if moved := await asyncio.to_thread(settle, ctx):
        note_restored(ctx, moved)
    await asyncio.to_thread(ctx.pool.trim, ctx.width if limits.pool_size is None else limits.pool_size)
    status = _final_status(ctx, done)
    ctx.store.update_run(ctx.run_id, status=status, finished_at=time.time(), reason=done.reason)
    if do_land and status == "completed":
        run = ctx.store.run(ctx.run_id)
        outcome = await asyncio.to_thread(land, ctx.repo, run.integration_branch, run.base)
        ctx.emit(RunNote(run_id=ctx.run_id, ts=ctx.now(), text=f"landed {run.integration_branch} on {run.base}: "
                                                                  f"{outcome}"))
    summary = summarize(ctx.store, ctx.run_id)
    ctx.emit(RunFinished(run_id=ctx.run_id, ts=ctx.now(), status=status, summary=summary))
    return RunResult(ctx.run_id, status, EXIT_CODES[status], summary)


def _final_status(ctx: RunContext, done: RunDone) -> str:
    if not done.complete:
        return done.reason if done.reason in ("cancelled", "budget_exhausted") else "interrupted"
    statuses = {t.status for t in ctx.store.tasks(ctx.run_id)}
    if statuses <= {"merged"}:
        return "completed"
    return "budget_exhausted" if done.reason == "budget_exhausted" else "failed"


@contextlib.contextmanager
def _signals(engine: Engine, ctx: RunContext) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop gracefully; second: kill at once. A pending `orchard cancel` cancels instead."""
    loop = asyncio.get_running_loop()
    count = [0]

    def handler(signum: int) -> None:
        count[0] += 1
        cancel = bool(ctx.store.run(ctx.run_id).cancel_requested)
        ctx.emit(RunNote(run_id=ctx.run_id, ts=ctx.now(), level="warning",
                         text=("cancel requested" if cancel else f"interrupted by {signal.Signals(signum).name}")
                         + ("; killing agents" if count[0] > 1 else "; stopping agents, starting nothing new")))
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

