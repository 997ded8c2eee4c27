"""Requests of a run that another process makes, the one way for every caller (`orchard cancel TASK`, the web
dashboard's cancel button): checked against the run as it is now, then journaled for its session to carry out."""

from __future__ import annotations

import json
from collections.abc import Sequence

from orchard.core.journal import Records
from orchard.core.steering import CANCEL_TASKS
from orchard.core.transitions import Journal
from orchard.errors import UsageError


def steerable(records: Records, run_id: str | None) -> Journal:
    """The run's journal (default: the latest run); a run that cannot go on any more is refused."""
    from orchard.runtime.session import open_journal

    journal = open_journal(records, records.run(run_id).id)
    status = journal.run().status
    if not status.resumable:
        raise UsageError(f"run {journal.run_id} is {status}: there is nothing left to steer")
    return journal


def request_cancel(journal: Journal, names: Sequence[str]) -> int:
    """Ask the run to cancel tasks `names` (their agents stop, their dependents are blocked); the request's id."""
    unknown = [n for n in names if n not in journal.plan]
    if unknown:
        raise UsageError(f"run {journal.run_id} has no task {', '.join(repr(u) for u in unknown)}")
    return journal.control_requested(CANCEL_TASKS, json.dumps({"tasks": list(names)}),
                                     detail="cancel " + ", ".join(names))
