"""Reusable worktrees. Every worktree orchard makes keeps one path for its whole life, `.orchard/pool/<id>`; a task
holds one through a link, `.orchard/worktrees/<run>/<task>`, and its attempts' processes run at the real path. When
the task's work is committed the link goes and the worktree is parked; the next task takes it, reset to its own start
commit, instead of checking out the whole repository again. A reset touches only the files that differ, and what the
environment's setup left in a kept path still works because its path never changed (a Python venv records absolute
paths: its editable install and the shebangs of its console scripts).

The pool lives on disk only: a worktree in `pool/` that no task's link leads to is parked, and it is cleaned and on a
detached HEAD before its link is removed. A crash can leave a dangling link, a link an agent pointed elsewhere or a
directory that is no sound worktree; each is checked before use and thrown away.
"""

from __future__ import annotations

import contextlib
import os
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
    worktree_branch,
)
from orchard.vcs.git import ADMIN_LOCK


class WorktreePool:
    """The worktrees of one repository, held by tasks or parked. Methods are called from worker threads."""

    def __init__(self, repo: Repo, layout: Layout, keep: tuple[str, ...] = ()) -> None:
        self.repo = repo
        self.layout = layout
        self.keep = keep  # git-ignore patterns of what a reused worktree keeps (`environment.keep`: a `.venv`)

    @property
    def root(self) -> Path:
        return self.layout.root / "pool"

    def parked(self) -> list[Path]:
        """The parked worktrees (in the pool, no task's link leading to them), oldest first."""
        if not self.root.is_dir():
            return []
        held = self._held()
        return sorted((p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink() and p.name not in held),
                      key=lambda p: p.stat().st_mtime)

    def acquire(self, link: Path, branch: str, commit: str) -> Path:
        """A clean worktree for the task whose link is `link`, on `branch` set to `commit`: the task's own from an
        earlier attempt, a parked one, or a new checkout. Returns its real path, where the attempt's processes run."""
        own = self._target(link)
        if own is not None and self._reset(own, branch, commit, clean=True):
            return own
        self._forget(link)
        with ADMIN_LOCK:
            parked = self._claim(link)
        if parked is not None and self._reset(parked, branch, commit, clean=False):
            return parked
        self._forget(link)
        fresh = self.root / secrets.token_hex(6)
        self._link(link, fresh)  # the link first: a crash between the two leaves a dangling link, nothing checked out
        add_worktree(self.repo, fresh, branch, commit)
        return fresh

    def release(self, link: Path, capacity: int) -> None:
        """Park the worktree a task no longer needs (its work is committed); beyond `capacity` parked, remove it."""
        real = self._target(link)
        if real is None or not is_linked_worktree(self.repo, real):
            self.discard(link)
            return
        try:
            detach_head(real)  # its task branch can then be deleted once merged
            clean_worktree(real, keep=self.keep)  # here rather than when taken: off the path of the next start
            with ADMIN_LOCK:
                if len(self.parked()) < capacity:
                    if real == link:  # a task's worktree from before links: into the pool, its last move
                        move_worktree(self.repo, link, self.root / secrets.token_hex(6))
                    else:
                        os.utime(real)  # parked now: the newest is taken first, the oldest trimmed first
                        link.unlink()
                    return
        except (GitError, OSError):
            pass
        self.discard(link)

    def trim(self, keep: int) -> int:
        """Remove parked worktrees beyond the newest `keep`, and any unsound one; returns how many."""
        removed = 0
        parked = self.parked()
        for i, path in enumerate(parked):
            if i < len(parked) - keep or not self._sound(path):
                self.discard(path)
                removed += 1
        return removed

    def discard_run(self, run_id: str) -> int:
        """Remove the worktrees a run's tasks still hold (kept for inspection); returns how many."""
        where = self.layout.worktrees(run_id)
        held = [p for p in where.iterdir() if p.is_symlink() or p.is_dir()] if where.is_dir() else []
        for path in held:
            self.discard(path)
        return len(held)

    def discard(self, path: Path) -> None:
        """Remove a task's link and the worktree it leads to, or a worktree orchard made, registered with git or not
        (a crash can leave either). A link that leads out of the pool is removed, never followed."""
        if not path.is_symlink():
            self._remove(path)
            return
        target = self._target(path)
        if target is not None:
            self._remove(target)  # before the link: a worktree without one would count as parked, dirty
        path.unlink(missing_ok=True)

    def _remove(self, path: Path) -> None:
        if is_linked_worktree(self.repo, path):
            with contextlib.suppress(GitError, OSError):
                remove_worktree(self.repo, path)
        if path.exists() and self.layout.root.resolve() in path.resolve().parents:
            shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(GitError):
                prune_worktrees(self.repo)

    def _target(self, link: Path) -> Path | None:
        """The worktree directory `link` leads to: a pool directory for a link (None for one leading anywhere
        else, or nowhere), `link` itself for a task's worktree from before links."""
        if not link.is_symlink():
            return link if link.is_dir() else None
        with contextlib.suppress(OSError):
            real = self.root / Path(os.readlink(link)).name
            if real.is_dir() and not real.is_symlink() and link.resolve() == real.resolve():
                return real
        return None

    def _held(self) -> set[str]:
        """The names of the pool directories tasks' links lead to."""
        links = self.layout.root / "worktrees"
        runs = [r for r in links.iterdir() if r.is_dir() and not r.is_symlink()] if links.is_dir() else []
        return {target.name for run in runs for entry in run.iterdir()
                if entry.is_symlink() and (target := self._target(entry)) is not None}

    def _link(self, link: Path, target: Path) -> None:
        link.parent.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)

    def _forget(self, link: Path) -> None:
        """Drop a link whose worktree was thrown away (or never was one); git forgets a worktree an agent deleted,
        whose branch it would otherwise count as checked out there."""
        gone = link.resolve() if link.is_symlink() else link
        if link.is_symlink():
            link.unlink(missing_ok=True)
        elif link.exists():
            self.discard(link)
        if registered_but_missing(self.repo, gone):
            prune_worktrees(self.repo)

    def _claim(self, link: Path) -> Path | None:
        """Link the newest sound parked worktree to `link`; None if none is parked (unsound ones are removed)."""
        for parked in reversed(self.parked()):
            if self._sound(parked):
                self._link(link, parked)
                return parked
            self.discard(parked)
        return None

    def _sound(self, parked: Path) -> bool:
        """Whether a worktree no task holds is one release parked: a worktree of this repository on a detached HEAD
        (release detaches and cleans before it drops the link; one left on a branch lost its link some other way,
        an agent's doing, and may hold anything)."""
        return is_linked_worktree(self.repo, parked) and worktree_branch(parked) is None

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
