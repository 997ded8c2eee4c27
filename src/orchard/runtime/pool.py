"""Reusable worktrees: a finished attempt's worktree is parked in `.orchard/pool/` and the next attempt takes it,
reset to its own start commit, instead of checking out the whole repository again.

A reset touches only the files that differ from the parked commit, so on a large repository a task starts in a
fraction of a `git worktree add`. The pool is kept between runs (trimmed to `keep` worktrees at the end of each) and
lives on disk only: what is in the directory is what is parked, so a crash can leave nothing to reconcile but a
half-moved worktree, which is checked before use and thrown away.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from pathlib import Path

from orchard.errors import GitError
from orchard.runtime.layout import Layout
from orchard.vcs import (
    Repo,
    add_worktree,
    clean_worktree,
    detach_head,
    is_linked_worktree,
    move_worktree,
    prune_worktrees,
    registered_but_missing,
    remove_worktree,
    reset_worktree,
)
from orchard.vcs.git import ADMIN_LOCK


class WorktreePool:
    """The parked worktrees of one repository. Methods are called from worker threads."""

    def __init__(self, repo: Repo, layout: Layout, keep: tuple[str, ...] = ()) -> None:
        self.repo = repo
        self.layout = layout
        self.keep = keep  # git-ignore patterns of what a reused worktree keeps (`environment.keep`: a `.venv`)

    @property
    def root(self) -> Path:
        return self.layout.root / "pool"

    def parked(self) -> list[Path]:
        """The parked worktrees, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)

    def acquire(self, path: Path, branch: str, commit: str) -> bool:
        """A clean worktree at `path` on `branch` set to `commit`: the task's own from an earlier attempt, a parked
        one moved here (cleaned when it was parked), or a new checkout. Returns True when one was reused."""
        if path.exists() and self._reset(path, branch, commit, clean=True):
            return True
        if registered_but_missing(self.repo, path):  # its branch would count as checked out there
            prune_worktrees(self.repo)
        parked = self._take(path)
        if parked and self._reset(path, branch, commit, clean=False):
            return True
        add_worktree(self.repo, path, branch, commit)
        return False

    def release(self, path: Path, capacity: int) -> None:
        """Park a worktree nobody needs any more (its work is committed); beyond `capacity` parked, remove it."""
        if not is_linked_worktree(self.repo, path):
            self.discard(path)
            return
        try:
            detach_head(path)  # its task branch can then be deleted once merged
            clean_worktree(path, keep=self.keep)  # here rather than when taken: off the path of the next start
            with ADMIN_LOCK:
                if len(self.parked()) < capacity:
                    move_worktree(self.repo, path, self.root / secrets.token_hex(6))
                    return
        except (GitError, OSError):
            pass
        self.discard(path)

    def trim(self, keep: int) -> int:
        """Remove parked worktrees beyond the newest `keep`, and any a crash left half-moved; returns how many."""
        removed = 0
        parked = self.parked()
        for i, path in enumerate(parked):
            if i < len(parked) - keep or not is_linked_worktree(self.repo, path):
                self.discard(path)
                removed += 1
        return removed

    def discard(self, path: Path) -> None:
        """Remove a worktree orchard made, registered with git or not (a crash can leave either)."""
        if is_linked_worktree(self.repo, path):
            with contextlib.suppress(GitError, OSError):
                remove_worktree(self.repo, path)
        if path.exists() and self.layout.root.resolve() in path.resolve().parents:
            shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(GitError):
                prune_worktrees(self.repo)

    def _take(self, path: Path) -> bool:
        """Move the newest sound parked worktree to `path`; False if none is parked (unsound ones are removed)."""
        if path.exists():
            self.discard(path)
        with ADMIN_LOCK:
            for parked in reversed(self.parked()):
                if not is_linked_worktree(self.repo, parked):
                    self.discard(parked)
                    continue
                try:
                    move_worktree(self.repo, parked, path)
                    return True
                except GitError:
                    self.discard(parked)
        return False

    def _reset(self, path: Path, branch: str, commit: str, clean: bool) -> bool:
        """Reset a worktree to `commit` on `branch` (and remove every leftover when `clean`); False (and it is thrown
        away) if it is not a sound worktree of this repository."""
        if is_linked_worktree(self.repo, path):
            try:
                reset_worktree(path, branch, commit, clean=clean, keep=self.keep)
                return True
            except GitError:
                pass
        self.discard(path)
        return False
