"""What `orchard report` needs beyond the store: each task's change file by file (from orchard's repository) and
the tail of each task's latest log (orchard wrote it, redacted)."""

from __future__ import annotations

import os
from pathlib import Path

from orchard.core.journal import Records
from orchard.core.records import AttemptRecord
from orchard.errors import GitError
from orchard.runtime.changes import task_range
from orchard.vcs import Repo
from orchard.vcs.lines import diff_numstat

LOG_TAIL_BYTES = 4096

FileStat = tuple[str, int | None, int | None]


def task_files(git: Repo, records: Records, run_id: str) -> dict[str, list[FileStat]]:
    """Each task's change (`runtime.changes.task_range`) as (path, added, removed); none for a task without one
    or whose commits are gone."""
    attempts: dict[str, list[AttemptRecord]] = {}
    for a in records.attempts(run_id):
        attempts.setdefault(a.task_id, []).append(a)
    found: dict[str, list[FileStat]] = {}
    for task in records.tasks(run_id):
        try:
            span = task_range(git, task, attempts.get(task.task_id, []))
            if span is not None:
                found[task.task_id] = diff_numstat(git, *span)
        except GitError:
            continue
    return found


def log_tails(records: Records, run_id: str, *, limit: int = LOG_TAIL_BYTES) -> dict[str, str]:
    """The last `limit` bytes of each task's latest log, from a line's start."""
    latest: dict[str, str] = {}
    for a in records.attempts(run_id):
        latest[a.task_id] = a.log_path
    return {task: tail for task, path in latest.items() if (tail := _tail(Path(path), limit))}


def _tail(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - limit))
            data = fh.read(limit)
    except OSError:
        return ""
    if len(data) == limit and b"\n" in data:
        data = data[data.index(b"\n") + 1:]
    return data.decode("utf-8", errors="replace")
