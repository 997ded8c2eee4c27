"""The merge step of the queue: one task's result into the integration branch, with no checkout touched.

A merge a dead session made is `runtime.recovery`'s to find before the queue starts; here only a result that
changed nothing can already be in the integration branch.
"""

from __future__ import annotations

import asyncio
import contextlib

from orchard.core.feedback import conflict_feedback
from orchard.core.model import MergeOutcome, Outcome
from orchard.core.scheduler import MergeEnded
from orchard.errors import GitError, GitTimeout, RefMoved
from orchard.runtime.context import RunContext, note_repaired
from orchard.runtime.integration import guard, note_restored
from orchard.vcs import MergeResult, delete_ref, merge_into, read_ref

MERGE_TRIES = 5  # attempts to merge while an agent keeps moving the integration ref
# a git failure that is not a conflict (a lock, a missing object) is no fault of the agent's: the merge is tried
# again after these pauses, and then the task fails as a git error without running its agent again
GIT_ERROR_BACKOFF_S = (0.5, 2.0)


def merge_message(ctx: RunContext, task_id: str) -> str:
    """The merge commit's message: its title is the task's name or its prompt's first line, unless that holds a
    secret (checked before the cut to 72 characters, which could split one past recognition): then `task <id>`."""
    task = ctx.plan.task(task_id)
    title = task.name or (task.prompt.strip().splitlines() or [""])[0]
    title = title[:72] if ctx.redactor(title) == title else f"task {task_id}"
    return f"orchard: merge task {task_id}\n\n{title}\n\nOrchard-Run: {ctx.run_id}\nOrchard-Task: {task_id}\n"


async def merge_task(ctx: RunContext, task_id: str) -> MergeEnded:
    """Merge the task's result; on a conflict record the paths as feedback for its retry.

    Tidying up after a merge is `tidy`'s job, outside the one-at-a-time queue."""
    head, empty = recorded_result(ctx, task_id)
    for delay in (*GIT_ERROR_BACKOFF_S, None):
        try:
            result, moved, repaired = await asyncio.to_thread(_merge_result, ctx, task_id, head, empty)
            break
        except GitError as exc:
            if isinstance(exc, GitTimeout) and ctx.processes.stopping:  # a hard stop killed it: no verdict
                ctx.journal.noted(f"the merge of {task_id} was stopped ({exc}); resuming merges it", level="warning")
                return MergeEnded(task_id, merged=False, interrupted=True)
            if delay is None or ctx.processes.stopping:
                error = f"git error while merging: {exc}"
                ctx.journal.merge_finished(task_id, MergeOutcome.ERROR, error=error)
                return MergeEnded(task_id, merged=False, error=error)
            ctx.journal.noted(f"merging {task_id} failed ({exc}); trying again in {delay:g} s", level="warning")
            await asyncio.sleep(delay)
    if moved:
        note_restored(ctx, moved)
    note_repaired(ctx, repaired, f"before merging {task_id}")
    outcome = MergeOutcome(result.status)
    ctx.journal.merge_finished(task_id, outcome, commit=result.commit, conflicts=result.conflicts,
                               feedback=conflict_feedback(result.conflicts) if result.conflicts else "",
                               tip=ctx.integration.tip)
    return MergeEnded(task_id, merged=outcome is not MergeOutcome.CONFLICT, conflicts=result.conflicts)


def recorded_result(ctx: RunContext, task_id: str) -> tuple[str | None, bool]:
    """The commit the task's successful attempt took from its task branch (None if none was recorded), and whether
    the result may be in the integration branch already: checking containment costs a git process in the
    one-at-a-time queue, and only a result that changed nothing (or one with no recorded commit) can be."""
    attempt = next((a for a in reversed(ctx.journal.attempts(task_id))
                    if a.outcome is Outcome.SUCCESS and a.end_commit), None)
    head = attempt.end_commit if attempt else None
    return head, attempt is None or head == attempt.start_commit


def result_head(ctx: RunContext, task_id: str, head: str | None) -> str:
    """`head`, else the task branch as it is now (a result from before end commits were recorded)."""
    if head is None:
        head = read_ref(ctx.git, "refs/heads/" + ctx.task_branch(task_id))
    if head is None:
        raise GitError(["rev-parse", ctx.task_branch(task_id)], 1, "task branch is missing")
    return head


def _merge_result(ctx: RunContext, task_id: str, head: str | None,
                  empty: bool) -> tuple[MergeResult, str | None, list[str]]:
    """The git side of a merge, in one worker thread: the merge of the result (the commit the successful attempt
    took from its task branch, or the branch as it is now), what an agent had moved the ref to, and what it had
    changed in orchard's repository."""
    return _merge(ctx, result_head(ctx, task_id, head), merge_message(ctx, task_id), empty)


def _merge(ctx: RunContext, head: str, message: str, maybe_in: bool) -> tuple[MergeResult, str | None, list[str]]:
    """Merge onto orchard's recorded tip and record the new tip; if an agent moved the ref (the update's expected
    old value does not match), put it back first and merge again."""
    moved, integration = None, ctx.integration
    with integration.lock:
        repaired = ctx.own.restore()  # no merge driver or attribute an agent planted in orchard's repository counts
        for _ in range(MERGE_TRIES):  # an agent may move the ref between our restore and our update
            try:
                result = merge_into(ctx.git, integration.ref, head, message, expected_tip=integration.tip,
                                    check_contained=maybe_in)
            except RefMoved:
                moved = guard(ctx.git, integration) or moved
                continue
            if result.status == "merged" and result.commit:
                integration.tip = result.commit
            return result, moved, repaired
        raise GitError(["update-ref", integration.ref], 1, "the integration branch keeps being moved by an agent")


def tidy(ctx: RunContext, task_id: str) -> None:
    """A merged task needs neither its worktree nor its branch (the merge commit keeps its history)."""
    worktree = ctx.layout.worktree(ctx.run_id, task_id)
    if worktree.is_symlink() or worktree.exists():  # parked already unless a crash or a failed release left it
        ctx.pool.discard(worktree)
    with contextlib.suppress(GitError):
        delete_ref(ctx.git, "refs/heads/" + ctx.task_branch(task_id))
