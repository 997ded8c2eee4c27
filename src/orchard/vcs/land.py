"""Landing: merging the integration branch into the user's base branch, the one step that may touch
the user's checkout — and only when the base branch is checked out there, clean, with the user's consent
(the engine calls this only on an explicit `land` request).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from orchard.errors import GitError, LandRefused, RefProblem
from orchard.vcs.git import (
    Repo,
    _git,
    branch_ref,
    commit_ident_args,
    is_ancestor,
    read_ref,
    set_ref,
    validate_branch_name,
)
from orchard.vcs.merge import merge_into
from orchard.vcs.worktrees import list_worktrees

LandResult = Literal["fast-forward", "merged", "up-to-date"]


def land(repo: Repo, integration_branch: str, base_branch: str) -> LandResult:
    """Merge `integration_branch` into `base_branch`: fast-forward when possible, else a merge commit."""
    for name in (integration_branch, base_branch):
        validate_branch_name(repo, name)
    source = _tip(repo, integration_branch)
    base = _tip(repo, base_branch)
    if is_ancestor(repo, source, base):
        return "up-to-date"
    message = f"Merge branch '{integration_branch}' into {base_branch}"
    holder = _checked_out_at(repo, base_branch)
    if holder is None:
        return _land_ref(repo, base_branch, base, source, message)
    if holder != repo.root.resolve():
        raise LandRefused(
            f"cannot land: branch '{base_branch}' is checked out in another worktree at {holder}; "
            "switch that worktree to another branch, or land from it"
        )
    return _land_checkout(repo, base, source, message)


def _tip(repo: Repo, branch: str) -> str:
    """The commit `branch` points at; RefProblem if it does not exist."""
    sha = read_ref(repo, branch_ref(branch))
    if sha is None:
        raise RefProblem(f"unknown ref '{branch}'")
    return sha


def _checked_out_at(repo: Repo, branch: str) -> Path | None:
    """The (resolved) path of the worktree that has `branch` checked out, if any."""
    ref = branch_ref(branch)
    for wt in list_worktrees(repo):
        if wt.branch == ref and not wt.bare:
            return wt.path.resolve()
    return None


def _land_ref(repo: Repo, base_branch: str, base: str, source: str, message: str) -> LandResult:
    """Land onto a branch nobody has checked out by moving its ref (fast-forward or merge commit)."""
    ref = branch_ref(base_branch)
    if is_ancestor(repo, base, source):
        if not set_ref(repo, ref, source, base, "orchard: land (fast-forward)"):
            raise GitError(["update-ref", ref, source, base], 1, f"{ref} moved while landing")
        return "fast-forward"
    result = merge_into(repo, ref, source, message, expected_tip=base)
    if result.status == "conflict":
        raise LandRefused(
            f"cannot land: merging into '{base_branch}' conflicts in: {', '.join(result.conflicts)}; "
            f"merge '{base_branch}' into the integration branch and resolve, then land again"
        )
    return "merged"


def _land_checkout(repo: Repo, base: str, source: str, message: str) -> LandResult:
    """Land onto the branch checked out in the user's checkout with a real `git merge`, if it is clean."""
    dirty = _dirty_paths(repo)
    if dirty:
        shown = ", ".join(dirty[:10]) + (f" (+{len(dirty) - 10} more)" if len(dirty) > 10 else "")
        raise LandRefused(
            f"cannot land: the checkout at {repo.root} has uncommitted changes ({shown}); commit or stash them first"
        )
    if is_ancestor(repo, base, source):
        proc = _git(repo, "merge", "--quiet", "--ff-only", "--end-of-options", source, check=False)
        if proc.returncode != 0:
            raise LandRefused(f"cannot land: git refused the fast-forward: {proc.stderr.strip()}")
        return "fast-forward"
    ident = commit_ident_args(repo)
    proc = _git(
        repo,
        *ident,
        "merge",
        "--quiet",
        "--no-ff",
        "--no-edit",
        "--no-verify",
        "--no-gpg-sign",
        "-m",
        message,
        "--end-of-options",
        source,
        check=False,
    )
    if proc.returncode == 0:
        return "merged"
    if _git(repo, "rev-parse", "--quiet", "--verify", "MERGE_HEAD", check=False).returncode != 0:
        raise LandRefused(f"cannot land: git refused the merge: {proc.stderr.strip()}")
    conflicts = _git(repo, "diff", "--name-only", "-z", "--diff-filter=U").stdout.split("\0")
    _git(repo, "merge", "--abort")
    names = ", ".join(p for p in dict.fromkeys(conflicts) if p) or "unknown paths"
    raise LandRefused(
        f"cannot land: merging into the checkout conflicts in: {names}; the merge was aborted, nothing changed"
    )


def _dirty_paths(repo: Repo) -> list[str]:
    """Tracked files with unstaged or staged modifications in the user's checkout (untracked ignored)."""
    out = _git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=no").stdout
    paths: list[str] = []
    fields = iter(out.split("\0"))
    for entry in fields:
        if not entry:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":
            next(fields, None)  # the rename/copy source follows as its own field
    return paths
