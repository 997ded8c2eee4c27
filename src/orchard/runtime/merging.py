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
from orchard.vcs import MergeResult, delete_ref, is_ancestor, list_branches, merge_into, read_ref

MERGE_TRIES = 5  # attempts to merge while an agent keeps moving the integration ref


def _message(ctx: RunContext, task_id: str) -> str:
    task = ctx.plan.task(task_id)
    title = task.name or (task.prompt.strip().splitlines() or [""])[0][:72]
    return f"orchard: merge task {task_id}\n\n{title}\n\nOrchard-Run: {ctx.run_id}\nOrchard-Task: {task_id}\n"


async def merge_task(ctx: RunContext, task_id: str) -> MergeEnded:
    """Merge (or recognise as already merged) the task's result; on conflict record the paths as feedback.

    Tidying up after a merge is `tidy`'s job, outside the one-at-a-time queue."""
    recorded = ctx.store.task(ctx.run_id, task_id).merged_commit
    attempt = next((a for a in reversed(ctx.store.attempts(ctx.run_id, task_id))
                    if a.outcome == "success" and a.end_commit), None)
    head = attempt.end_commit if attempt else None
    # only a merge an earlier session may have made before it died, or a result that changed nothing, can already
    # be in the integration branch: the check costs a git process in the one-at-a-time queue, so only then
    maybe_in = task_id in ctx.recovered_merges or attempt is None or head == attempt.start_commit
    try:
        result, moved = await asyncio.to_thread(_merge_result, ctx, task_id, recorded, head, maybe_in)
    except GitError as exc:
        ctx.emit(MergeFinished(run_id=ctx.run_id, ts=ctx.now(), task=task_id, result="error"))
        return MergeEnded(task_id, merged=False, error=f"merge failed: {exc}")
    if result is None:  # merged and tidied before a crash recorded it
        return MergeEnded(task_id, merged=True)
    if moved:
        note_restored(ctx, moved)
    with ctx.store.atomic():
        if result.status == "conflict":
            ctx.store.update_task(ctx.run_id, task_id, conflicts=", ".join(result.conflicts),
                                  feedback=conflict_feedback(result.conflicts))
        else:
            ctx.store.update_run(ctx.run_id, integration_tip=ctx.integration_tip)
            ctx.store.update_task(ctx.run_id, task_id, merged_commit=result.commit, conflicts="", error="")
        ctx.emit(MergeFinished(run_id=ctx.run_id, ts=ctx.now(), task=task_id, result=result.status,
                               commit=result.commit, conflicts=result.conflicts))
    if result.status == "conflict":
        return MergeEnded(task_id, merged=False, conflicts=result.conflicts)
    return MergeEnded(task_id, merged=True)


def _merge_result(ctx: RunContext, task_id: str, recorded: str | None, head: str | None,
                  maybe_in: bool) -> tuple[MergeResult | None, str | None]:
    """The git side of a merge, in one worker thread: None if the recorded merge commit is already on the
    integration branch, else the merge of the result (the commit the successful attempt took from its task
    branch, or the branch as it is now) and what an agent had moved the ref to."""
    if recorded and is_ancestor(ctx.repo, recorded, ctx.integration_tip):
        return None, None
    if head is None:
        head = read_ref(ctx.repo, "refs/heads/" + ctx.task_branch(task_id))
    if head is None:
        raise GitError(["rev-parse", ctx.task_branch(task_id)], 1, "task branch is missing")
    return _merge(ctx, head, _message(ctx, task_id), maybe_in)


def _merge(ctx: RunContext, head: str, message: str, maybe_in: bool) -> tuple[MergeResult, str | None]:
    """Merge onto orchard's recorded tip and record the new tip; if an agent moved the ref (the update's expected
    old value does not match), put it back first and merge again."""
    moved = None
    with ctx.ref_lock:
        for _ in range(MERGE_TRIES):  # an agent may move the ref between our restore and our update
            try:
                result = merge_into(ctx.repo, ctx.integration_ref, head, message, expected_tip=ctx.integration_tip,
                                    check_contained=maybe_in)
            except RefMoved:
                moved = guard(ctx) or moved
                continue
            if result.status == "merged" and result.commit:
                ctx.integration_tip = result.commit
            return result, moved
        raise GitError(["update-ref", ctx.integration_ref], 1, "the integration branch keeps being moved by an agent")


def tidy(ctx: RunContext, task_id: str) -> None:
    """A merged task needs neither its worktree nor its branch (the merge commit keeps its history)."""
    worktree = ctx.layout.worktree(ctx.run_id, task_id)
    if worktree.exists():  # parked already unless a crash or a failed release left it
        ctx.pool.discard(worktree)
    with contextlib.suppress(GitError):
        delete_ref(ctx.repo, "refs/heads/" + ctx.task_branch(task_id))


def settle(ctx: RunContext) -> str | None:
    """At the end of a session: put the integration ref back if an agent moved it, and remove what merged tasks
    left behind (a crash between merging and tidying leaves their worktree or branch)."""
    with ctx.ref_lock:
        moved = guard(ctx)
    branches = set(list_branches(ctx.repo, f"orchard/{ctx.run_id}/task"))
    for row in ctx.store.tasks(ctx.run_id):
        leftover = ctx.layout.worktree(ctx.run_id, row.task_id).exists() or ctx.task_branch(row.task_id) in branches
        if row.status == "merged" and leftover:
            tidy(ctx, row.task_id)
    return moved
