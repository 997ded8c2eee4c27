"""What landing a run brings home: `orchard land` takes a run some of whose tasks did not merge only when asked
(`--partial`), and then says what it left out. Pure: words from a run's task records."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from orchard.core.model import TaskStatus
from orchard.core.records import TaskRecord

NAMES_SHOWN = 6


def not_merged(tasks: Iterable[TaskRecord]) -> list[str]:
    """The ids of the tasks whose work is not on the integration branch (failed, blocked, cancelled, not run yet)."""
    return [t.task_id for t in tasks if t.status is not TaskStatus.MERGED]


def named(ids: Sequence[str], limit: int = NAMES_SHOWN) -> str:
    """`a, b, c`, or the first `limit` and how many more."""
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def tasks_word(count: int) -> str:
    return f"{count} {_task_noun(count)}"


def _task_noun(count: int) -> str:
    return "task" if count == 1 else "tasks"


def partial_hint(run_id: str, merged: int) -> str:
    """The command that lands what merged of a run, and what it lands."""
    return f"`orchard land --partial {run_id}` lands the {merged} merged {_task_noun(merged)} only"


def refusal(run_id: str, tasks: Sequence[TaskRecord]) -> str | None:
    """Why `orchard land` (without `--partial`) does not land the run; None when every task merged."""
    missing = not_merged(tasks)
    if not missing:
        return None
    merged = len(tasks) - len(missing)
    hint = partial_hint(run_id, merged) if merged else "nothing merged, so there is nothing to land"
    return f"run {run_id}: {len(missing)} of {tasks_word(len(tasks))} did not merge ({named(missing)}); {hint}"


def partial_note(tasks: Sequence[TaskRecord]) -> str:
    """What `land --partial` says it landed: "" when every task merged."""
    missing = not_merged(tasks)
    if not missing:
        return ""
    merged = len(tasks) - len(missing)
    return f"landed the {merged} merged {_task_noun(merged)} only ({len(missing)} did not merge: {named(missing)})"
