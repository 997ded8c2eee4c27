"""Per-task git worktrees: create, list, commit everything, reset for a new attempt, remove.

`git worktree add` in git 2.39 accepts the conventional `--` before `<path> <commit-ish>`
(`worktree add -f -B <branch> --no-track -- <path> <commit>`), so paths starting with `-` are safe.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchard.errors import GitError
from orchard.vcs.git import ADMIN_LOCK, Repo, _git, admin_dir, commit_ident_args, validate_branch_name


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
    """Create a worktree at `path` on branch `branch`, (re)set to `commit`.

    Only the registration holds `ADMIN_LOCK`; the checkout of the files (seconds on a large repository) runs outside
    it, so it never holds up other worktrees' administration."""
    validate_branch_name(repo, branch)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ADMIN_LOCK:
        _git(repo, "worktree", "add", "--quiet", "--no-checkout", "-f", "--no-track", "-B", branch, "--", str(path),
             commit)
    _git(path, "reset", "--quiet", "--hard")


def add_detached_worktree(repo: Repo, path: Path, commit: str) -> None:
    """Create a worktree at `path` with `commit` checked out detached: no branch is made (a scratch checkout)."""
    with ADMIN_LOCK:
        _git(repo, "worktree", "add", "--quiet", "--detach", "--", str(path), commit)


def move_worktree(repo: Repo, src: Path, dst: Path) -> None:
    """Move a linked worktree (a rename plus git's bookkeeping); `dst` must not exist."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with ADMIN_LOCK:
        _git(repo, "worktree", "move", "--", str(src), str(dst))


def detach_head(worktree: Path) -> None:
    """Detach the worktree's HEAD at its commit (files and index untouched), so its branch can be deleted."""
    _git(worktree, "update-ref", "--no-deref", "-m", "orchard: detach", "HEAD", "HEAD")


def registered_but_missing(repo: Repo, path: Path) -> bool:
    """True if git still records a worktree at `path` that no longer exists (an agent deleted it): until it is
    pruned, git treats that worktree's branch as checked out. Read from git's files, no process."""
    admin = repo.git_dir / "worktrees"
    if path.exists() or not admin.is_dir():
        return False
    target = (path / ".git").resolve()
    for entry in admin.iterdir():
        try:
            if Path((entry / "gitdir").read_text(encoding="utf-8").strip()).resolve() == target:
                return True
        except (OSError, ValueError):
            continue
    return False


def is_linked_worktree(repo: Repo, path: Path) -> bool:
    """True if `path` is one of the repository's linked worktrees and git's record of it points back at it.

    Read from the files git keeps (no process): a worktree whose `.git` file was rewritten, or that was moved behind
    git's back, is not one, and running git inside it could reach another worktree's HEAD or index (or, through
    its `commondir`, another repository)."""
    admin = admin_dir(path)
    if admin is None or admin.resolve().parent != (repo.git_dir / "worktrees").resolve():
        return False
    try:
        back = Path((admin / "gitdir").read_text(encoding="utf-8").strip())
        common = (admin / (admin / "commondir").read_text(encoding="utf-8").strip()).resolve()
    except (OSError, ValueError):
        return False
    # a rewritten `commondir` would point git at another repository's refs and config from inside this worktree
    return back.resolve() == (path / ".git").resolve() and common == repo.git_dir.resolve()


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


def untracked_matching(repo: Repo, patterns: Sequence[str], pattern_files: Sequence[Path] = ()) -> list[str]:
    """The untracked files of a checkout (ignored or not) that git-ignore `patterns`, or the patterns in
    `pattern_files`, name; paths relative to its root."""
    if not patterns and not pattern_files:
        return []
    options = [*(f"--exclude={p}" for p in patterns), *(f"--exclude-from={f}" for f in pattern_files)]
    out = _git(repo, "ls-files", "-z", "--others", "--ignored", *options).stdout
    return [path for path in out.split("\0") if path]


def paths_changed(repo: Repo, old: str, new: str, paths: Sequence[str]) -> list[str]:
    """Which of `paths` any commit after `old` up to `new` changed (added and removed again counts)."""
    if not paths:
        return []
    out = _git(repo, "log", "--format=", "--name-only", "--no-renames", "-z", f"{old}..{new}", "--",
               *(f":(literal){p}" for p in paths)).stdout
    return sorted({p.strip("\n") for p in out.split("\0") if p.strip("\n")})


def untracked_tops(worktree: Path) -> list[str]:
    """The untracked, not ignored files of a worktree, a directory holding only such files named once (`dir/`)."""
    out = _git(worktree, "ls-files", "-z", "--others", "--exclude-standard", "--directory").stdout
    return [p for p in out.split("\0") if p]


def untracked_entries(worktree: Path) -> list[str]:
    """Every untracked path of a worktree, ignored ones too, a directory of them named once (`.venv/`)."""
    out = _git(worktree, "ls-files", "-z", "--others", "--directory").stdout
    return [p for p in out.split("\0") if p]


def staged_blobs(worktree: Path, patterns: Sequence[str]) -> str:
    """`ls-files --stage` of the files matching the glob `patterns` in a worktree's index (its commit's content)."""
    return _git(worktree, "ls-files", "--stage", "-z", "--", *(f":(glob){p}" for p in patterns)).stdout


def tracked_matching(checkout: Path, patterns: Sequence[str]) -> list[str]:
    """The tracked files of a checkout that the glob `patterns` name, relative to its root."""
    out = _git(checkout, "ls-files", "-z", "--", *(f":(glob){p}" for p in patterns)).stdout
    return [p for p in out.split("\0") if p]


def tree_without(repo: Repo, commit: str, paths: Sequence[str]) -> str:
    """The tree of `commit` with `paths` left out (through an index of its own: no checkout touched)."""
    index = repo.git_dir / f"orchard-index-{os.getpid()}-{threading.get_ident()}"
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        _git(repo, "read-tree", "--end-of-options", commit, env=env)
        _git(repo, "rm", "--cached", "--quiet", "--ignore-unmatch", "-r", "--", *(f":(literal){p}" for p in paths),
             env=env)
        return _git(repo, "write-tree", env=env).stdout.strip()
    finally:
        index.unlink(missing_ok=True)


def checkout_status(repo: Repo) -> str:
    """`git status` of a checkout, every untracked file listed and no rename pairing (NUL-separated porcelain v1),
    to compare before and after."""
    return _git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames").stdout


def worktree_branch(worktree: Path) -> str | None:
    """The full ref of the branch checked out in `worktree`, or None when its HEAD is detached.

    Read from the worktree's own HEAD file when it is a plain linked worktree (no process), else asked of git."""
    admin = admin_dir(worktree)
    try:
        head = (admin / "HEAD").read_text(encoding="utf-8").strip() if admin else ""
    except (OSError, ValueError):
        head = ""
    if head:
        return head.removeprefix("ref:").strip() if head.startswith("ref:") else None
    proc = _git(worktree, "symbolic-ref", "-q", "HEAD", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def commit_all(worktree: Path, message: str, *, leave_out: Sequence[str] = ()) -> bool:
    """Stage every change (tracked, and untracked-but-not-ignored) but the paths in `leave_out`, and commit it;
    False if none."""
    _git(worktree, "add", "-A")
    if leave_out:  # unstaged again: naming ignored files in `add` (even to exclude them) is an error
        _git(worktree, "rm", "--cached", "--quiet", "--ignore-unmatch", "-r", "--",
             *(f":(literal){path}" for path in leave_out))
    ident = commit_ident_args(worktree)
    proc = _git(worktree, *ident, "commit", "--quiet", "--no-verify", "--no-gpg-sign", "--cleanup=whitespace",
                "-m", message, check=False)
    if proc.returncode == 0:
        return True
    # exit 1 is also how `commit` says "nothing to commit": only an index equal to HEAD makes that an answer
    staged = _git(worktree, "diff-index", "--quiet", "--cached", "HEAD", "--", check=False)
    if proc.returncode == 1 and staged.returncode == 0:
        return False
    raise GitError(proc.args[1:], proc.returncode, proc.stderr or proc.stdout)


def reset_worktree(worktree: Path, branch: str, commit: str, *, keep_ignored: bool = False,
                   clean: bool = True, keep: Sequence[str] = ()) -> None:
    """Reuse `worktree` for a fresh attempt: force branch `branch` to `commit` and delete all leftovers.

    Ignored files (build output, node_modules …) are removed too unless `keep_ignored`, so a new attempt
    cannot be influenced by artefacts of a failed one; `clean=False` when the caller cleaned it already.
    """
    validate_branch_name(worktree, branch)
    _git(worktree, "checkout", "--quiet", "-f", "--no-track", "-B", branch, commit, "--")
    if clean:
        clean_worktree(worktree, keep_ignored=keep_ignored, keep=keep)


def clean_worktree(worktree: Path, *, keep_ignored: bool = False, keep: Sequence[str] = ()) -> None:
    """Delete every untracked file (and ignored one, unless `keep_ignored`) in `worktree`, but those the git-ignore
    patterns `keep` name."""
    _git(worktree, "clean", "-ffd" if keep_ignored else "-ffdx", "--quiet", *(f"--exclude={p}" for p in keep))


def merge_for_resolution(worktree: Path, commit: str) -> list[str]:
    """Merge `commit` into the worktree's branch without committing (git's `merge --no-commit`, markers in diff3
    style, showing the merge base too), for an agent to resolve; the conflicted paths ([] when it merged clean).
    The merge stays in progress: the next commit in the worktree is the merge commit."""
    ident = commit_ident_args(worktree)
    proc = _git(worktree, *ident, "-c", "merge.conflictStyle=diff3", "merge", "--no-ff", "--no-commit", "--quiet",
                "--end-of-options", commit, check=False)
    if proc.returncode not in (0, 1):
        raise GitError(proc.args[1:], proc.returncode, proc.stderr or proc.stdout)
    out = _git(worktree, "diff", "--name-only", "-z", "--diff-filter=U").stdout
    return [p for p in out.split("\0") if p]
