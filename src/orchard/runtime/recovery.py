"""Bringing the journal and git back into agreement after a crash, and tidying up after every session.

The rules, in the order `orchard resume` applies them:
1. The integration tip to trust is orchard's record, or the ref itself when everything it adds since the record is
   this run's own merges (a session died after moving the ref and before recording it).
2. Process groups a dead session left running are killed: those its attempts recorded and any process carrying the
   run's `ORCHARD_RUN_ID`, each only while its leader still carries that id (pids are reused). Then each attempt
   it left open without a teardown gets one, in its worktree, with the slot and ports it had reserved.
3. Attempts the journal shows open are closed as interrupted, at the last moment the dead session was seen.
4. A task whose merge is on the trusted tip is merged: it never goes through the queue again. That is a task left
   merging whose recorded merge commit is there, and any task, whatever the journal says of it, with a merge commit
   found in step 1 by its `Orchard-Task` trailer: git, not the journal, is the record of what merged, so a journal
   that lost its last transactions (a power loss can roll back SQLite's WAL) does not run merged work again.
5. Tasks named by `orchard retry`, and what they blocked, start afresh; the others restart from where they were.
At the end of every session, `settle` puts the ref back if an agent moved it and removes what merged tasks left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from orchard.core.journal import RunJournal
from orchard.core.model import RunStatus, TaskStatus
from orchard.core.records import RunRecord, TaskRecord
from orchard.core.scheduler import Restored
from orchard.core.steering import Reloader
from orchard.errors import UsageError
from orchard.runtime.context import RunContext
from orchard.runtime.environment import PhaseResult, run_phase
from orchard.runtime.integration import guard
from orchard.runtime.merging import tidy
from orchard.runtime.process import kill_group
from orchard.runtime.resources import task_variables
from orchard.runtime.sandbox import check_box
from orchard.runtime.workspace import attempt_variables
from orchard.vcs import Repo, first_parent_log, is_ancestor, list_branches, read_ref

S = TaskStatus


@dataclass(frozen=True)
class TrustedTip:
    """The integration tip to resume from, and the merges found on it that the journal never recorded."""

    tip: str
    unrecorded: dict[str, str]  # task id → its merge commit


def trusted_tip(repo: Repo, run: RunRecord, ref: str, *, checked: frozenset[str] | None = None) -> TrustedTip:
    """Rule 1: the record, or the ref if it only adds this run's own merges. Under a gate (`checked`: the
    candidates its journal says it began checking) the ref is trusted only at one of those: only a candidate that
    passed moves it, so anything else is a tree nobody checked."""
    recorded = run.integration_tip or run.base_commit
    actual = read_ref(repo, ref)
    if not actual or actual == recorded or not is_ancestor(repo, recorded, actual):
        return TrustedTip(recorded, {})
    if checked is not None and actual not in checked:
        return TrustedTip(recorded, {})
    found: dict[str, str] = {}
    for commit, message in first_parent_log(repo, recorded, actual):
        trailers = dict(line.partition(": ")[::2] for line in message.splitlines() if ": " in line)
        if trailers.get("Orchard-Run") != run.id or not trailers.get("Orchard-Task"):
            return TrustedTip(recorded, {})  # someone else's commit: the guard puts the ref back
        found.setdefault(trailers["Orchard-Task"], commit)
    return TrustedTip(actual, found)


def check_resettable(journal: RunJournal, reset: tuple[str, ...]) -> None:
    """Only existing, unmerged tasks can be retried: a merged task's changes are in the integration branch already,
    and running it again would apply them twice."""
    statuses = {t.task_id: t.status for t in journal.tasks()}
    unknown = [t for t in reset if t not in statuses]
    if unknown:
        raise UsageError(f"run {journal.run_id} has no task {', '.join(repr(t) for t in unknown)}")
    merged = [t for t in reset if statuses[t] is S.MERGED]
    if merged:
        raise UsageError(f"run {journal.run_id}: {', '.join(merged)} already merged; retry only failed, conflicted or "
                         "blocked tasks")


def reap_orphans(journal: RunJournal, orchard_dir: Path) -> int:
    """Rule 2: kill the process groups of agents a dead orchestrator left running; returns how many. A process is
    this run's only if it carries the run's id and a worktree under this repository's `.orchard/` (`orchard_dir`):
    another repository's run with the same id is never touched."""
    run_id, where = journal.run_id, str(orchard_dir) + os.sep
    groups = {a.pgid for a in journal.open_attempts() if a.pgid}
    ours: dict[int, int] = {}  # pid → its process group, for every live process of this run
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.pid != os.getpid() and _ours(proc.environ(), run_id, where):
                ours[proc.pid] = os.getpgid(proc.pid)
    groups |= set(ours.values())
    # a group is killed whole when its leader is ours, or gone with members of ours left (a sandbox whose bwrap
    # monitor died: the leader's pid cannot be reused while the group lives)
    killed = sum(1 for pgid in groups
                 if pgid != os.getpgrp() and (_group_belongs_to(pgid, run_id, where)
                                              or (pgid in ours.values() and not psutil.pid_exists(pgid)))
                 and kill_group(pgid, signal.SIGKILL))
    for pid in ours:  # and any of ours left in a group that was not killed (setsid, a foreign leader)
        with contextlib.suppress(psutil.Error, OSError):
            proc = psutil.Process(pid)
            if _ours(proc.environ(), run_id, where):  # still the process it was (pids are reused)
                proc.kill()
    return killed


def _ours(env: dict[str, str], run_id: str, where: str) -> bool:
    return env.get("ORCHARD_RUN_ID") == run_id and env.get("ORCHARD_WORKTREE", "").startswith(where)


def _group_belongs_to(pgid: int, run_id: str, where: str) -> bool:
    """Only kill a recorded group if its leader still carries this run's id and repository (pids are reused)."""
    try:
        return _ours(psutil.Process(pgid).environ(), run_id, where)
    except (psutil.Error, OSError):
        return False


async def tear_down_left(ctx: RunContext) -> int:
    """Rule 2, its end: the teardown a dead session owed each attempt it left open (a `docker compose down` for
    the compose project of the slot that attempt held); returns how many ran. Recorded on the attempt, so a crash
    of this resume does not run one twice."""
    ran = 0
    for attempt in ctx.journal.open_attempts():
        environment = ctx.plan.environment_of(attempt.task_id)
        if not environment.teardown or attempt.teardown_s is not None:
            continue
        worktree = Path(attempt.worktree)
        variables = task_variables(run_id=ctx.run_id, task_id=attempt.task_id, root=str(ctx.user_repo.root),
                                   worktree=attempt.worktree, slot=attempt.slot or 0, port=attempt.port,
                                   environment=environment)
        if not worktree.is_dir():
            result = PhaseResult(False, f"teardown not run: its worktree {worktree} is gone")
        else:
            result = await run_phase(
                ctx.host, phase="teardown", commands=environment.teardown, task_id=attempt.task_id,
                box=check_box(ctx, attempt.agent, worktree), worktree=worktree, log_path=Path(attempt.log_path),
                timeout_s=environment.setup_timeout_s,
                env=attempt_variables(ctx.run_id, attempt.task_id, attempt.number, worktree,
                                      tuple(variables.items())))
        ctx.journal.teardown_finished(attempt.id, passed=result.passed, duration_s=result.duration_s,
                                      detail=result.detail, recovered=True)
        ran += 1
    return ran


def reconcile(ctx: RunContext, found: TrustedTip, *, last_seen: float, reset: tuple[str, ...]) -> dict[str, Restored]:
    """Rules 3-5, in one transaction; returns where each task restarts."""
    journal = ctx.journal
    with journal.atomic(durable=True):
        for attempt in journal.open_attempts():
            journal.attempt_abandoned(attempt.id, detail="orchestrator stopped",
                                      finished_at=max(attempt.started_at, last_seen))
        for task in journal.tasks():
            if task.status is S.MERGING or (task.status is not S.MERGED and task.task_id in found.unrecorded):
                _adopt_merge(ctx, task, found)
        for task_id in _with_what_they_blocked(journal, reset):
            journal.task_reset(task_id)
    return restored_states(journal)


def _adopt_merge(ctx: RunContext, task: TaskRecord, found: TrustedTip) -> None:
    """Rule 4 for one task left merging, or found merged on the tip."""
    commit = found.unrecorded.get(task.task_id)
    if commit is None and task.merged_commit and is_ancestor(ctx.git, task.merged_commit, found.tip):
        commit = task.merged_commit
    if commit is not None:
        ctx.journal.merge_recovered(task.task_id, commit=commit, tip=found.tip)


def _with_what_they_blocked(journal: RunJournal, reset: tuple[str, ...]) -> list[str]:
    """The tasks to reset: those named, and every task they blocked (or that was cancelled behind them)."""
    statuses = {t.task_id: t.status for t in journal.tasks()}
    chosen, stack = list(dict.fromkeys(reset)), list(reset)
    while stack:
        current = stack.pop()
        for t in journal.plan.tasks:
            if current in t.depends_on and statuses[t.id] in (S.BLOCKED, S.CANCELLED) and t.id not in chosen:
                chosen.append(t.id)
                stack.append(t.id)
    return chosen


def restored_states(journal: RunJournal) -> dict[str, Restored]:
    """Where each task restarts: final and merging ones stay so, everything else waits again (with the attempts
    it used and the retries it spent)."""
    spent: dict[str, float] = {}
    for attempt in journal.attempts():
        spent[attempt.task_id] = spent.get(attempt.task_id, 0.0) + attempt.cost_usd
    restored = {}
    for task in journal.tasks():
        status = task.status if task.status.terminal or task.status is S.MERGING else S.PENDING
        restored[task.task_id] = Restored(status, task.attempts, task.failures, spent.get(task.task_id, 0.0))
    return restored


def cancel_dead_run(journal: RunJournal, orchard_dir: Path) -> int:
    """`orchard cancel` of a run no live session holds: its leftover agents killed, open attempts closed, waiting
    tasks cancelled, the run ended cancelled. Returns how many process groups were killed."""
    reaped = reap_orphans(journal, orchard_dir)
    now = time.time()
    with journal.atomic():
        for attempt in journal.open_attempts():
            journal.attempt_abandoned(attempt.id, detail="run cancelled", finished_at=now)
        for task in journal.tasks():
            if not task.status.terminal:
                journal.task_cancelled(task.task_id)
        journal.run_finished(RunStatus.CANCELLED, reason="cancelled")
    return reaped


def settle(ctx: RunContext) -> str | None:
    """At the end of a session: put the integration ref back if an agent moved it, and remove what merged tasks
    left behind (a crash between merging and tidying leaves their worktree or branch)."""
    with ctx.integration.lock:
        moved = guard(ctx.git, ctx.integration)
    branches = set(list_branches(ctx.git, f"orchard/{ctx.run_id}/task"))
    for task in ctx.journal.tasks():
        link = ctx.layout.worktree(ctx.run_id, task.task_id)
        leftover = link.is_symlink() or link.exists() or ctx.task_branch(task.task_id) in branches
        if task.status is S.MERGED and leftover:
            tidy(ctx, task.task_id)
    return moved


def reload_plan(journal: RunJournal, reloader: Reloader | None, reset: tuple[str, ...]) -> tuple[str, ...]:
    """A resume's look at the plan file: what changed since the run's snapshot is said, or with `--reload` taken
    (`core.plan_diff`); returns the tasks to reset, less those the reload cancelled."""
    if reloader is None:
        return reset
    source = journal.plan.source
    reload = reloader(journal.plan, {t.task_id: t.status for t in journal.tasks()})
    if reload.changes.empty:
        return reset
    if not reloader.apply:
        journal.noted(f"{source} changed since the run started: {reload.changes.summary()}; `--reload` takes the "
                      "changes for the tasks that have not merged", level="warning")
        return reset
    journal.plan_reloaded(reload, source=source)
    return tuple(t for t in reset if t not in reload.cancel)
