"""Merging a task's commit into a branch without any checkout (`merge-tree --write-tree` + `commit-tree`).

What git 2.39 prints for `git merge-tree --write-tree --name-only --no-messages -z <tip> <source>`:
  clean    -> exit 0, stdout "<tree-oid>\\0"
  conflict -> exit 1, stdout "<tree-oid>\\0<path>\\0<path>\\0…" (one entry per conflicted path; we dedupe)
  bad ref  -> exit 1 too, with *empty* stdout and "not something we can merge" on stderr, so an exit 1
              whose first field is not an object id is treated as a failure, not a conflict.
Any other exit status is a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from orchard.errors import GitError, RefMoved, RefProblem
from orchard.vcs.git import Repo, _git, branch_ref, commit_ident_args, is_ancestor, is_oid, read_ref, set_ref


@dataclass(frozen=True)
class MergeResult:
    """What `merge_into` did: merged (new tip), already (source already contained) or conflict (paths)."""

    status: Literal["merged", "already", "conflict"]
    commit: str | None  # the target's tip afterwards (merged / already)
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class TreeMerge:
    """The outcome of an in-memory merge: the written tree and any conflicted paths."""

    tree: str
    conflicts: tuple[str, ...]


def merge_trees(repo: Repo, ours: str, theirs: str) -> TreeMerge:
    """Merge two commits in memory (no index, no worktree) and write the resulting tree."""
    proc = _git(repo, "merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", "--end-of-options",
                ours, theirs, check=False)
    fields = proc.stdout.split("\0")
    if proc.returncode not in (0, 1) or not is_oid(fields[0]):
        raise GitError(proc.args[1:], proc.returncode, proc.stderr or proc.stdout)
    paths = tuple(dict.fromkeys(p for p in fields[1:] if p)) if proc.returncode == 1 else ()
    if proc.returncode == 1 and not paths:
        raise GitError(proc.args[1:], proc.returncode, proc.stderr or "merge-tree reported conflicts but no paths")
    return TreeMerge(tree=fields[0], conflicts=paths)


def merge_into(
    repo: Repo,
    target_ref: str,
    source_commit: str,
    message: str,
    *,
    expected_tip: str | None = None,
    check_contained: bool = True,
) -> MergeResult:
    """Merge `source_commit` into `target_ref` (branch name or full ref) without touching any checkout.

    Always records a two-parent merge commit; a source already contained in the target is "already" (a caller that
    knows it cannot be passes `check_contained=False` and saves a git process). If the ref moved away from the tip
    we merged onto, raises RefMoved.
    """
    ref = branch_ref(target_ref)
    tip = expected_tip if expected_tip is not None else read_ref(repo, ref)
    if tip is None:
        raise RefProblem(f"unknown ref '{target_ref}'")
    if check_contained and is_ancestor(repo, source_commit, tip):
        return MergeResult("already", tip)
    merged = merge_trees(repo, tip, source_commit)
    if merged.conflicts:
        return MergeResult("conflict", None, merged.conflicts)
    new = commit_tree(repo, merged.tree, (tip, source_commit), message)
    if not set_ref(repo, ref, new, tip, f"orchard: {message.splitlines()[0] if message else 'merge'}"):
        raise RefMoved(["update-ref", ref, new, tip], 1, f"{ref} moved while merging (expected it at {tip})")
    return MergeResult("merged", new)


def commit_tree(repo: Repo, tree: str, parents: tuple[str, ...], message: str) -> str:
    """Write a commit object for `tree` with `parents`, using the configured or fallback identity."""
    parent_args = [arg for p in parents for arg in ("-p", p)]
    ident = commit_ident_args(repo)
    proc = _git(repo, *ident, "commit-tree", "--no-gpg-sign", *parent_args, "--end-of-options", tree,
                input=message + "\n")
    return proc.stdout.strip()
