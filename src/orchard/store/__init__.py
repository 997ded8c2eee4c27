"""Durable state: SQLite (WAL) at `.orchard/state.db`, numbered migrations, compat views."""

from orchard.store.store import AttemptRow, RunRow, Store, TaskRow

__all__ = ["AttemptRow", "RunRow", "Store", "TaskRow"]
