"""Per-task git worktrees: create, list, commit everything, reset for a new attempt, remove.

`git worktree add` in git 2.39 accepts the conventional `--` before `<path> <commit-ish>`
(`worktree add -f -B <branch> --no-track -- <path> <commit>`), so paths starting with `-` are safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchard.errors import GitError
from orchard.vcs.git import ADMIN_LOCK, Repo, _git, commit_ident_args, validate_branch_name


@dataclass(frozen=True)
class WorktreeInfo:
    """One entry of `git worktree list --porcelain`."""

    path: Path
    head: str | None  # None for a bare entry
    branch: str | None  # full ref (refs/heads/...), None when detached or bare
    bare: bool = False
    locked: bool = False
    prunable: bool = False


def add_worktree(repo: Repo, path: Path, branch: str, commit: str) -> None:
    """Create a worktree at `path` on branch `branch`, (re)set to `commit`."""
    validate_branch_name(repo, branch)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ADMIN_LOCK:
        _git(repo, "worktree", "add", "--quiet", "-f", "--no-track", "-B", branch, "--", str(path), commit)


def prune_worktrees(repo: Repo) -> None:
    """Forget worktrees whose directories have disappeared."""
    with ADMIN_LOCK:
        _git(repo, "worktree", "prune")


def remove_worktree(repo: Repo, path: Path) -> None:
    """Remove the worktree at `path` even if dirty or locked; tolerate an already-deleted directory."""
    with ADMIN_LOCK:
        _remove_worktree(repo, path)


def _remove_worktree(repo: Repo, path: Path) -> None:
    if not path.exists():
        prune_worktrees(repo)
        return
    proc = _git(repo, "worktree", "remove", "--force", "--force", "--", str(path), check=False)
    if proc.returncode == 0:
        return
    registered = {_canonical(w.path) for w in list_worktrees(repo)}
    if _canonical(path) not in registered and path.is_dir() and not any(path.iterdir()):
        path.rmdir()  # an empty, unregistered directory: nothing of git's to remove
        prune_worktrees(repo)
        return
    raise GitError(proc.args[1:], proc.returncode, proc.stderr)


def _canonical(path: Path) -> Path:
    """`path` with symlinks resolved, for comparing against git's (already resolved) paths."""
    return path.resolve(strict=False)


def list_worktrees(repo: Repo) -> list[WorktreeInfo]:
    """All worktrees of the repository, main worktree first."""
    out = _git(repo, "worktree", "list", "--porcelain", "-z").stdout
    return parse_worktree_list(out)


def parse_worktree_list(out: str) -> list[WorktreeInfo]:
    """Parse `git worktree list --porcelain -z` output (NUL-terminated fields, empty field ends a record)."""
    result: list[WorktreeInfo] = []
    fields: dict[str, str] = {}
    for item in out.split("\0"):
        if item:
            key, _, value = item.partition(" ")
            fields[key] = value
            continue
        if "worktree" in fields:
            result.append(
                WorktreeInfo(
                    path=Path(fields["worktree"]),
                    head=fields.get("HEAD"),
                    branch=fields.get("branch"),
                    bare="bare" in fields,
                    locked="locked" in fields,
                    prunable="prunable" in fields,
                )
            )
        fields = {}
    return result


def worktree_branch(worktree: Path) -> str | None:
    """The full ref of the branch checked out in `worktree`, or None when its HEAD is detached."""
    proc = _git(worktree, "symbolic-ref", "-q", "HEAD", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def worktree_head(worktree: Path) -> str:
    """The commit checked out in `worktree`."""
    return _git(worktree, "rev-parse", "--verify", "HEAD").stdout.strip()


def commit_all(worktree: Path, message: str) -> bool:
    """Stage every change (tracked, and untracked-but-not-ignored) and commit it; False if none."""
    _git(worktree, "add", "-A")
    staged = _git(worktree, "diff-index", "--quiet", "--cached", "HEAD", "--", check=False)
    if staged.returncode == 0:
        return False
    if staged.returncode != 1:
        raise GitError(staged.args[1:], staged.returncode, staged.stderr)
    ident = commit_ident_args(worktree)
    _git(worktree, *ident, "commit", "--quiet", "--no-verify", "--no-gpg-sign", "--cleanup=whitespace", "-m", message)
    return True


def reset_worktree(worktree: Path, branch: str, commit: str, *, keep_ignored: bool = False) -> None:
    """Reuse `worktree` for a fresh attempt: force branch `branch` to `commit` and delete all leftovers.

    Ignored files (build output, node_modules …) are removed too unless `keep_ignored`, so a new attempt
    cannot be influenced by artefacts of a failed one.
    """
    validate_branch_name(worktree, branch)
    _git(worktree, "checkout", "--quiet", "-f", "--no-track", "-B", branch, commit, "--")
    _git(worktree, "clean", "-ffd" if keep_ignored else "-ffdx", "--quiet")
