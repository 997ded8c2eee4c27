"""Durable state: SQLite (WAL) at `.orchard/state.db`, numbered migrations, compat views; the journal's records."""

from orchard.store.store import Store

__all__ = ["Store"]
