"""The context a task's attempt starts with (`context:`): what each direct dependency did, from the journal (its
merge commit, its agent's summary) and orchard's repository (the files its merged change touched)."""

from __future__ import annotations

import asyncio

from orchard.core.context import ChangedFile, ParentResult, parents_section
from orchard.core.model import Task
from orchard.core.records import AttemptRecord
from orchard.errors import GitError
from orchard.runtime.changes import change_range, merged_attempt
from orchard.runtime.context import RunContext
from orchard.vcs import Repo
from orchard.vcs.lines import diff_numstat


async def parents_context(ctx: RunContext, task: Task) -> str:
    """The prompt section on the task's merged dependencies ("" for `context: none` or a task without any)."""
    if task.context == "none" or not task.depends_on:
        return ""
    found = []
    for dep in task.depends_on:  # the journal is read here, on the loop; git in a worker thread
        record = ctx.journal.task(dep)
        done = merged_attempt(ctx.journal.attempts(dep))
        commit = record.merged_commit
        files = await asyncio.to_thread(_changed_files, ctx.git, commit, done)
        name = ctx.plan.task(dep).name if dep in ctx.plan else None
        found.append(ParentResult(id=dep, name=name, summary=done.summary if done else "", files=files,
                                  commit=commit))
    return parents_section(found, task.context)


def _changed_files(git: Repo, commit: str | None, attempt: AttemptRecord | None) -> tuple[ChangedFile, ...]:
    """What the merged change touched (`runtime.changes.change_range`), file by file."""
    try:
        found = change_range(git, commit, attempt)
        if found is None:
            return ()
        return tuple(ChangedFile(path, added, removed) for path, added, removed in diff_numstat(git, *found))
    except GitError:  # a pruned commit: the prompt goes without the file list rather than the attempt failing
        return ()
