"""Disk limits: refuse to start a run below a free-space threshold, stop one that runs out of space (resumably), and
keep the worktrees orchard kept for inspection under a size cap by removing the oldest of finished runs first."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from orchard.core.sizes import format_size, parse_size
from orchard.errors import DiskFull, EnvironmentProblem, GitError, UsageError
from orchard.runtime.layout import Layout
from orchard.runtime.pool import WorktreePool
from orchard.vcs import Repo, prune_worktrees

DEFAULT_MIN_FREE = "1GB"
DEFAULT_MAX_WORKTREES = "20GB"


@dataclass(frozen=True)
class DiskLimits:
    """Bytes that must stay free on the repository's file system, the cap on kept worktrees, and how many reusable
    worktrees stay parked between runs (None: as many as the run had tasks at once)."""

    min_free: int
    max_worktrees: int
    pool_size: int | None = None
    min_free_set: bool = False  # a flag or ORCHARD_MIN_FREE_DISK gave `min_free` (else a plan's `limits` may)

    @staticmethod
    def parse(min_free: str | None, max_worktrees: str | None, pool_size: int | None = None) -> DiskLimits:
        """From the CLI / library values, else ORCHARD_MIN_FREE_DISK / ORCHARD_MAX_WORKTREES_SIZE /
        ORCHARD_POOL_SIZE, else defaults."""
        values = []
        given = bool(min_free or os.environ.get("ORCHARD_MIN_FREE_DISK"))
        for value, env, default, flag in ((min_free, "ORCHARD_MIN_FREE_DISK", DEFAULT_MIN_FREE, "--min-free-disk"),
                                          (max_worktrees, "ORCHARD_MAX_WORKTREES_SIZE", DEFAULT_MAX_WORKTREES,
                                           "--max-worktrees-size")):
            text = value or os.environ.get(env) or default
            try:
                values.append(parse_size(text))
            except ValueError as exc:
                raise UsageError(f"{flag} / {env}: {exc}") from None
        return DiskLimits(values[0], values[1], _pool_size(pool_size), given)

    def for_plan(self, min_free_disk: int | None) -> DiskLimits:
        """These limits, with a plan's `limits.min_free_disk` where neither a flag nor the environment set one."""
        if self.min_free_set or min_free_disk is None:
            return self
        return replace(self, min_free=min_free_disk, min_free_set=True)


def _pool_size(value: int | None) -> int | None:
    if value is not None:
        return value
    text = os.environ.get("ORCHARD_POOL_SIZE", "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise UsageError(f"--pool-size / ORCHARD_POOL_SIZE: expected a whole number of worktrees, got {text!r}")
    return int(text)


def require_free_space(path: Path, limits: DiskLimits) -> None:
    """EnvironmentProblem (exit 3) when less than `min_free` bytes are free where the repository lives."""
    free = shutil.disk_usage(path).free
    if free < limits.min_free:
        raise EnvironmentProblem(f"only {format_size(free)} free on the file system of {path}, below the "
                                 f"{format_size(limits.min_free)} a run needs (set --min-free-disk or "
                                 "ORCHARD_MIN_FREE_DISK to change it)")


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded")


def out_of_space(exc: BaseException, path: Path, min_free: int) -> DiskFull | None:
    """The DiskFull a failure amounts to, if it does: the store or a write said so, a git process did, or
    whatever failed did so while less than `min_free` bytes were left where `path` lives (an agent or a verify
    that could not write is no fault of theirs)."""
    if isinstance(exc, DiskFull):
        return exc
    said = ((isinstance(exc, OSError) and exc.errno in _NO_SPACE)
            or (isinstance(exc, GitError) and any(text in exc.stderr for text in _NO_SPACE_TEXT)))
    return DiskFull(f"no space left on the file system of {path} ({exc})") if said else low_space(path, min_free)


def low_space(path: Path, min_free: int) -> DiskFull | None:
    """DiskFull when less than `min_free` bytes are free where `path` lives."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return None
    if free >= min_free:
        return None
    return DiskFull(f"the disk holding {path} is full: {format_size(free)} left, below the "
                    f"{format_size(min_free)} a run needs")


def tree_size(path: Path) -> int:
    """Bytes of the files under `path` (symlinks not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def collect_worktrees(repo: Repo, layout: Layout, limits: DiskLimits, keep_run: str) -> list[Path]:
    """Remove kept worktrees of other runs and parked reusable ones, oldest first, until all of them fit under
    `max_worktrees`."""
    base = layout.root / "worktrees"
    pool = WorktreePool(repo, layout)
    kept = [w for run in base.iterdir() if run.is_dir() and run.name != keep_run
            for w in run.iterdir() if w.is_dir()] if base.is_dir() else []  # tasks' links, followed
    kept += pool.parked()
    sizes = {w: tree_size(w) for w in kept}
    total = sum(sizes.values())
    removed = []
    for worktree in sorted(kept, key=lambda w: w.stat().st_mtime):
        if total <= limits.max_worktrees:
            break
        with contextlib.suppress(GitError, OSError):
            pool.discard(worktree)
        if not worktree.exists():
            total -= sizes[worktree]
            removed.append(worktree)
    if removed:
        prune_worktrees(repo)
    return removed
