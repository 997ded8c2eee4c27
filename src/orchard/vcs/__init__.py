"""orchard.vcs: everything orchard does with git (stdlib + `orchard.errors` only).

Synchronous on purpose: the engine calls these from worker threads via `asyncio.to_thread`.
Nothing here ever modifies the user's checkout, except `land` (an explicit user request).
"""

from orchard.vcs.git import (
    Repo,
    branch_exists,
    branch_ref,
    changed_paths,
    create_branch,
    delete_branch,
    ensure_excluded,
    find_repo,
    first_parent_messages,
    git_version,
    head_ref,
    is_ancestor,
    list_branches,
    parse_git_version,
    read_ref,
    require_git,
    resolve_commit,
    set_ref,
    snapshot_checkout,
    validate_branch_name,
)
from orchard.vcs.land import LandResult, land
from orchard.vcs.merge import MergeResult, TreeMerge, merge_into, merge_trees
from orchard.vcs.worktrees import (
    WorktreeInfo,
    add_worktree,
    commit_all,
    list_worktrees,
    prune_worktrees,
    remove_worktree,
    reset_worktree,
    worktree_branch,
    worktree_head,
)

__all__ = [
    "LandResult",
    "MergeResult",
    "Repo",
    "TreeMerge",
    "WorktreeInfo",
    "add_worktree",
    "branch_exists",
    "branch_ref",
    "changed_paths",
    "commit_all",
    "create_branch",
    "delete_branch",
    "ensure_excluded",
    "find_repo",
    "first_parent_messages",
    "git_version",
    "head_ref",
    "is_ancestor",
    "land",
    "list_branches",
    "list_worktrees",
    "merge_into",
    "merge_trees",
    "parse_git_version",
    "prune_worktrees",
    "read_ref",
    "remove_worktree",
    "require_git",
    "reset_worktree",
    "resolve_commit",
    "set_ref",
    "snapshot_checkout",
    "validate_branch_name",
    "worktree_branch",
    "worktree_head",
]
