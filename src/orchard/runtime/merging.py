"""The merge step of the queue: one task's branch into the integration branch, with no checkout touched."""

from __future__ import annotations

import asyncio
import contextlib

from orchard.core.events import MergeFinished
from orchard.core.feedback import conflict_feedback
from orchard.core.scheduler import MergeEnded
from orchard.errors import GitError, RefMoved
from orchard.runtime.attempt import note_restored
from orchard.runtime.context import RunContext
from orchard.runtime.integration import guard
from orchard.vcs import MergeResult, delete_branch, is_ancestor, list_branches, merge_into, read_ref, remove_worktree

MERGE_TRIES = 5  # attempts to merge while an agent keeps moving the integration ref


def _message(ctx: RunContext, task_id: str) -> str:
    task = ctx.plan.task(task_id)
    title = task.name or (task.prompt.strip().splitlines() or [""])[0][:72]
    return f"orchard: merge task {task_id}\n\n{title}\n\nOrchard-Run: {ctx.run_id}\nOrchard-Task: {task_id}\n"


async def merge_task(ctx: RunContext, task_id: str) -> MergeEnded:
    """Merge (or recognise as already merged) the task branch; on conflict record the paths as feedback."""
    branch = ctx.task_branch(task_id)
    if await asyncio.to_thread(_already_landed, ctx, task_id):  # merged and tidied before a crash recorded it
        return MergeEnded(task_id, merged=True)
    try:
        head = await asyncio.to_thread(read_ref, ctx.repo, "refs/heads/" + branch)
        if head is None:
            raise GitError(["rev-parse", branch], 1, "task branch is missing")
        result, moved = await asyncio.to_thread(_merge, ctx, head, _message(ctx, task_id))
    except GitError as exc:
        ctx.emit(MergeFinished(run_id=ctx.run_id, ts=ctx.now(), task=task_id, result="error"))
        return MergeEnded(task_id, merged=False, error=f"merge failed: {exc}")
    if moved:
        note_restored(ctx, moved)
    if result.status != "conflict":
        ctx.store.update_run(ctx.run_id, integration_tip=ctx.integration_tip)
    ctx.emit(MergeFinished(run_id=ctx.run_id, ts=ctx.now(), task=task_id, result=result.status,
                           commit=result.commit, conflicts=result.conflicts))
    if result.status == "conflict":
        ctx.store.update_task(ctx.run_id, task_id, conflicts=", ".join(result.conflicts),
                              feedback=conflict_feedback(result.conflicts))
        return MergeEnded(task_id, merged=False, conflicts=result.conflicts)
    ctx.store.update_task(ctx.run_id, task_id, merged_commit=result.commit, conflicts="", error="")
    await asyncio.to_thread(_tidy, ctx, task_id)
    return MergeEnded(task_id, merged=True)


def _already_landed(ctx: RunContext, task_id: str) -> bool:
    """True if the task's recorded merge commit is already on the integration branch."""
    commit = ctx.store.task(ctx.run_id, task_id).merged_commit
    return bool(commit) and is_ancestor(ctx.repo, str(commit), ctx.integration_tip)


def _merge(ctx: RunContext, head: str, message: str) -> tuple[MergeResult, str | None]:
    """Merge onto orchard's recorded tip (restoring the ref first if an agent moved it) and record the new tip."""
    with ctx.ref_lock:
        for _ in range(MERGE_TRIES):  # an agent may move the ref between our check and our update
            moved = guard(ctx)
            try:
                result = merge_into(ctx.repo, ctx.integration_ref, head, message, expected_tip=ctx.integration_tip)
            except RefMoved:
                continue
            if result.status == "merged" and result.commit:
                ctx.integration_tip = result.commit
            return result, moved
        raise GitError(["update-ref", ctx.integration_ref], 1, "the integration branch keeps being moved by an agent")


def _tidy(ctx: RunContext, task_id: str) -> None:
    """A merged task needs neither its worktree nor its branch (the merge commit keeps its history)."""
    with contextlib.suppress(GitError, OSError):
        remove_worktree(ctx.repo, ctx.layout.worktree(ctx.run_id, task_id))
    with contextlib.suppress(GitError):
        delete_branch(ctx.repo, ctx.task_branch(task_id))


def settle(ctx: RunContext) -> str | None:
    """At the end of a session: put the integration ref back if an agent moved it, and remove what merged tasks
    left behind (a crash between merging and tidying leaves their worktree or branch)."""
    with ctx.ref_lock:
        moved = guard(ctx)
    branches = set(list_branches(ctx.repo, f"orchard/{ctx.run_id}/task"))
    for row in ctx.store.tasks(ctx.run_id):
        leftover = ctx.layout.worktree(ctx.run_id, row.task_id).exists() or ctx.task_branch(row.task_id) in branches
        if row.status == "merged" and leftover:
            _tidy(ctx, row.task_id)
    return moved
