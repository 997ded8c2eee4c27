"""A task's change as two commits: what its merge brought onto the integration branch (the merge commit against
its first parent), or for a result merged without a merge commit, or one not merged, what its attempt made of its
start (`orchard diff`, the context a dependent's prompt gets)."""

from __future__ import annotations

from orchard.core.model import Outcome
from orchard.core.records import AttemptRecord, TaskRecord
from orchard.vcs import Repo, read_ref
from orchard.vcs.lines import first_parent


def merged_attempt(attempts: list[AttemptRecord]) -> AttemptRecord | None:
    """The attempt whose result merged: the task's last successful one."""
    return next((a for a in reversed(attempts) if a.outcome is Outcome.SUCCESS), None)


def change_range(git: Repo, commit: str | None, attempt: AttemptRecord | None) -> tuple[str, str] | None:
    """(old, new) of a merged change: the merge `commit` against its first parent; without a merge commit, the
    `attempt`'s start to its end; None when neither is known."""
    parent = first_parent(git, commit) if commit else None
    if parent is not None and commit is not None:
        return parent, commit
    if attempt is not None and attempt.end_commit:
        return attempt.start_commit, attempt.end_commit
    return None


def task_range(git: Repo, task: TaskRecord, attempts: list[AttemptRecord]) -> tuple[str, str] | None:
    """(old, new) of a task's change: its merged change once merged; before that, its branch (kept for a failed
    or conflicted task) against its latest attempt's start, else that attempt's own end; None before any."""
    if task.merged_commit:
        return change_range(git, task.merged_commit, merged_attempt(attempts))
    if not attempts:
        return None
    latest = attempts[-1]
    tip = read_ref(git, "refs/heads/" + task.branch) if task.branch else None
    end = tip or latest.end_commit
    return (latest.start_commit, end) if end else None
