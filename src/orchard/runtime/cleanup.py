"""Removing what a run left behind: the worktrees its tasks hold and its branches, in orchard's repository and in
the user's (where they were published). `orchard clean` and the end of a dry run (`runtime.dryrun`) both use it."""

from __future__ import annotations

import contextlib
import shutil

from orchard.errors import GitError
from orchard.runtime.layout import Layout
from orchard.runtime.pool import WorktreePool
from orchard.vcs import branch_exists, delete_branch, list_branches, prune_worktrees
from orchard.vcs.private import OwnRepository


def clean_run(own: OwnRepository, layout: Layout, run_id: str, *, integration: bool) -> tuple[int, int]:
    """Remove one run's worktrees and task branches (and its integration branch with `integration`), in orchard's
    repository and the user's; returns (worktrees, branches) removed, the branches counted as the user sees them
    (the user's copies). A branch checked out somewhere is kept, and not counted."""
    root = layout.worktrees(run_id)
    worktrees = WorktreePool(own.repo, layout).discard_run(run_id)
    prune_worktrees(own.repo)
    if root.exists():
        shutil.rmtree(root, ignore_errors=True)
    deleted = 0
    for repo in (own.repo, own.user):
        names = list_branches(repo, f"orchard/{run_id}/task")
        if integration:
            names += [f"orchard/{run_id}/integration"]
        for name in names:
            with contextlib.suppress(GitError):
                exists = branch_exists(repo, name)
                delete_branch(repo, name)
                deleted += exists and repo is own.user
    return worktrees, deleted
