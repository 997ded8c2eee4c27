"""What an analysis reads from git (`vcs.reading`): the base commit's paths, the contents of some of its files, and
the paths each recent commit changed. Three git processes at most, whatever the plan."""

from __future__ import annotations

from pathlib import Path

from orchard.analysis.history import NO_HISTORY, History, parse_log
from orchard.errors import RefProblem
from orchard.vcs import reading, resolve_commit

_MARKER = "\x01"  # starts each commit's field in the log output: no path begins with it
MAX_READ_BYTES = 1 << 20  # a Python file larger than this is generated; its imports are not worth reading


def base_commit(root: Path, ref: str | None) -> str | None:
    """The commit `ref` names (the plan's `base`; None: HEAD); None when `ref` is None and HEAD has no commit yet
    (a new repository). A `ref` that names nothing is a RefProblem."""
    try:
        return resolve_commit(root, ref or "HEAD")
    except RefProblem:
        if ref is None:
            return None
        raise RefProblem(f"base '{ref}' names no commit in {root}") from None


def tree_paths(root: Path, commit: str | None) -> list[str]:
    """Every file path in `commit`'s tree ([] without a commit)."""
    return [] if commit is None else reading.tree_paths(root, commit)


def read_files(root: Path, commit: str, paths: list[str]) -> dict[str, str]:
    """The text of each of `paths` in `commit`; missing or oversized files and non-blobs are left out."""
    return reading.read_blobs(root, commit, paths, max_bytes=MAX_READ_BYTES)


def recent_history(root: Path, commit: str | None, limit: int) -> History:
    """The paths each of the last `limit` commits reachable from `commit` changed (merges left out)."""
    if commit is None or limit <= 0:
        return NO_HISTORY
    return History.of(parse_log(reading.changed_paths_log(root, commit, limit, _MARKER), _MARKER))
