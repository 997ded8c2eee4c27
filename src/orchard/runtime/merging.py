"""The merge step of the queue: one task's branch into the integration branch, with no checkout touched."""

from __future__ import annotations

import asyncio
import contextlib

from orchard.core.events import MergeFinished
from orchard.core.feedback import conflict_feedback
from orchard.core.scheduler import MergeEnded
from orchard.errors import GitError
from orchard.runtime.context import RunContext
from orchard.vcs import delete_branch, merge_into, read_ref, remove_worktree


def _message(ctx: RunContext, task_id: str) -> str:
    task = ctx.plan.task(task_id)
    title = task.name or (task.prompt.strip().splitlines() or [""])[0][:72]
    return f"orchard: merge task {task_id}\n\n{title}\n\nOrchard-Run: {ctx.run_id}\nOrchard-Task: {task_id}\n"


async def merge_task(ctx: RunContext, task_id: str) -> MergeEnded:
    """Merge (or recognise as already merged) the task branch; on conflict record the paths as feedback."""
    branch = ctx.task_branch(task_id)
    try:
        head = await asyncio.to_thread(read_ref, ctx.repo, "refs/heads/" + branch)
        if head is None:
            raise GitError(["rev-parse", branch], 1, "task branch is missing")
        result = await asyncio.to_thread(merge_into, ctx.repo, ctx.integration_ref, head, _message(ctx, task_id))
    except GitError as exc:
        ctx.store.update_task(ctx.run_id, task_id, error=f"merge failed: {exc}")
        ctx.emit(MergeFinished(run_id=ctx.run_id, ts=ctx.now(), task=task_id, result="error"))
        return MergeEnded(task_id, merged=False)
    ctx.emit(MergeFinished(run_id=ctx.run_id, ts=ctx.now(), task=task_id, result=result.status,
                           commit=result.commit, conflicts=result.conflicts))
    if result.status == "conflict":
        ctx.store.update_task(ctx.run_id, task_id, conflicts=", ".join(result.conflicts),
                              feedback=conflict_feedback(result.conflicts))
        return MergeEnded(task_id, merged=False, conflicts=result.conflicts)
    ctx.store.update_task(ctx.run_id, task_id, merged_commit=result.commit, conflicts="", error="")
    await asyncio.to_thread(_tidy, ctx, task_id)
    return MergeEnded(task_id, merged=True)


def _tidy(ctx: RunContext, task_id: str) -> None:
    """A merged task needs neither its worktree nor its branch (the merge commit keeps its history)."""
    with contextlib.suppress(GitError, OSError):
        remove_worktree(ctx.repo, ctx.layout.worktree(ctx.run_id, task_id))
    with contextlib.suppress(GitError):
        delete_branch(ctx.repo, ctx.task_branch(task_id))
