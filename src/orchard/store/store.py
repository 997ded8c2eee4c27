"""The durable state of runs: SQLite in WAL mode, written as things happen, one transaction per state change."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from orchard.core.events import OrchardEvent
from orchard.core.model import Plan
from orchard.core.serialize import plan_from_dict, plan_to_dict
from orchard.errors import NotRecorded, StoreUnreadable
from orchard.store.schema import migrate

R = TypeVar("R")

TASK_COLUMNS = frozenset(
    {"status", "attempts", "failures", "branch", "started_at", "finished_at", "error", "conflicts",
     "merged_commit", "feedback"}
)
ATTEMPT_COLUMNS = frozenset(
    {"finished_at", "outcome", "exit_code", "signal", "pid", "pgid", "end_commit", "detail", "tokens_in",
     "tokens_out", "cost_usd", "session_id"}
)
RUN_COLUMNS = frozenset({"status", "finished_at", "pid", "reason", "cancel_requested", "integration_tip"})


@dataclass(frozen=True)
class RunRow:
    id: str
    status: str
    base: str
    base_commit: str
    integration_branch: str
    plan_source: str
    parallel: int
    started_at: float
    finished_at: float | None
    pid: int | None
    reason: str
    cancel_requested: bool
    integration_tip: str | None = None


@dataclass(frozen=True)
class TaskRow:
    task_id: str
    position: int
    status: str
    agent: str
    track: str | None
    attempts: int
    failures: int
    branch: str | None
    started_at: float | None
    finished_at: float | None
    error: str
    conflicts: str
    merged_commit: str | None
    feedback: str


@dataclass(frozen=True)
class AttemptRow:
    id: int
    task_id: str
    number: int
    agent: str
    started_at: float
    finished_at: float | None
    outcome: str | None
    exit_code: int | None
    signal: int | None
    pid: int | None
    pgid: int | None
    worktree: str
    start_commit: str
    end_commit: str | None
    log_path: str
    detail: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    session_id: str | None


def _row(cls: type[R], row: sqlite3.Row) -> R:
    """A row as the dataclass `cls` (columns it does not know are left out)."""
    names = cls.__dataclass_fields__  # type: ignore[attr-defined]
    return cls(**{k: row[k] for k in row.keys() if k in names})  # noqa: SIM118 - sqlite3.Row has no __iter__ of keys


class Store:
    """Runs, tasks, attempts and the event journal of one repository."""

    def __init__(self, path: Path, redact: Callable[[str], str] | None = None) -> None:
        self.path = path
        self.redact = redact or (lambda text: text)  # every text written passes through it (secrets)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=30000")
            migrate(self.conn)
            os.chmod(path, 0o600)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnreadable(f"cannot open state store {path}: {exc}") from exc

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """One transaction; nested use joins the outer one."""
        if self.conn.in_transaction:
            yield self.conn
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ---- runs -------------------------------------------------------------------------------------------------
    def create_run(self, run_id: str, plan: Plan, base: str, base_commit: str, integration_branch: str,
                   parallel: int, started_at: float, pid: int) -> None:
        """Record a new run and every task of its plan as pending."""
        with self.atomic() as c:
            c.execute(
                "INSERT INTO runs (id, status, base, base_commit, integration_branch, plan_source, plan_json,"
                " parallel, started_at, pid, integration_tip) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, base, base_commit, integration_branch, plan.source, json.dumps(plan_to_dict(plan)),
                 parallel, started_at, pid, base_commit),
            )
            track_of = {tid: name for name, members in plan.tracks.items() for tid in members}
            c.executemany(
                "INSERT INTO tasks (run_id, task_id, position, status, agent, track) VALUES (?, ?, ?, 'pending', ?, ?)",
                [(run_id, t.id, i, t.agent, track_of.get(t.id, t.track)) for i, t in enumerate(plan.tasks)],
            )

    def update_run(self, run_id: str, **values: Any) -> None:
        self._update("runs", RUN_COLUMNS, "id = ?", (run_id,), values)

    def run(self, run_id: str | None = None) -> RunRow:
        """The named run, or the latest one; NotRecorded if there is none."""
        if run_id:
            row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        else:
            row = self.conn.execute("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1").fetchone()
        if row is None:
            raise NotRecorded(f"no run '{run_id}' in {self.path}" if run_id else f"no runs recorded in {self.path}")
        return _row(RunRow, row)

    def runs(self) -> list[RunRow]:
        rows = self.conn.execute("SELECT * FROM runs ORDER BY started_at, rowid").fetchall()
        return [_row(RunRow, r) for r in rows]

    def plan(self, run_id: str) -> Plan:
        row = self.conn.execute("SELECT plan_json FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotRecorded(f"no run '{run_id}' in {self.path}")
        return plan_from_dict(json.loads(row[0]))

    # ---- tasks ------------------------------------------------------------------------------------------------
    def update_task(self, run_id: str, task_id: str, **values: Any) -> None:
        self._update("tasks", TASK_COLUMNS, "run_id = ? AND task_id = ?", (run_id, task_id), values)

    def tasks(self, run_id: str) -> list[TaskRow]:
        rows = self.conn.execute("SELECT * FROM tasks WHERE run_id = ? ORDER BY position", (run_id,)).fetchall()
        return [_row(TaskRow, r) for r in rows]

    def task(self, run_id: str, task_id: str) -> TaskRow:
        row = self.conn.execute("SELECT * FROM tasks WHERE run_id = ? AND task_id = ?", (run_id, task_id)).fetchone()
        if row is None:
            raise NotRecorded(f"run {run_id} has no task '{task_id}'")
        return _row(TaskRow, row)

    # ---- attempts ---------------------------------------------------------------------------------------------
    def start_attempt(self, run_id: str, task_id: str, number: int, agent: str, started_at: float,
                      worktree: str, start_commit: str, log_path: str) -> int:
        cur = self.conn.execute(
            "INSERT INTO attempts (run_id, task_id, number, agent, started_at, worktree, start_commit, log_path)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, task_id, number, agent, started_at, worktree, start_commit, log_path),
        )
        return int(cur.lastrowid or 0)

    def update_attempt(self, attempt_id: int, **values: Any) -> None:
        self._update("attempts", ATTEMPT_COLUMNS, "id = ?", (attempt_id,), values)

    def attempts(self, run_id: str, task_id: str | None = None) -> list[AttemptRow]:
        sql, args = "SELECT * FROM attempts WHERE run_id = ?", [run_id]
        if task_id is not None:
            sql, args = sql + " AND task_id = ?", [*args, task_id]
        rows = self.conn.execute(sql + " ORDER BY id", args).fetchall()
        return [_row(AttemptRow, r) for r in rows]

    def open_attempts(self, run_id: str) -> list[AttemptRow]:
        """Attempts a previous session started and never finished (crash or kill)."""
        rows = self.conn.execute(
            "SELECT * FROM attempts WHERE run_id = ? AND finished_at IS NULL ORDER BY id", (run_id,)
        ).fetchall()
        return [_row(AttemptRow, r) for r in rows]

    # ---- journal ----------------------------------------------------------------------------------------------
    def append_event(self, event: OrchardEvent, agent: str | None = None) -> int:
        data = self.redact(json.dumps(event.to_dict()))
        cur = self.conn.execute(
            "INSERT INTO events (run_id, ts, task_id, agent, type, message, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.run_id, event.ts, event.task_id, agent, event.type, self.redact(event.message()), data),
        )
        return int(cur.lastrowid or 0)

    def events(self, run_id: str, after_id: int = 0, task_id: str | None = None) -> list[tuple[int, dict[str, Any]]]:
        sql, args = "SELECT id, data FROM events WHERE run_id = ? AND id > ?", [run_id, after_id]
        if task_id is not None:
            sql, args = sql + " AND task_id = ?", [*args, task_id]
        rows = self.conn.execute(sql + " ORDER BY id", args).fetchall()
        return [(int(r[0]), json.loads(r[1])) for r in rows]

    def last_event_ts(self, run_id: str) -> float | None:
        """When the run's journal last recorded anything."""
        row = self.conn.execute("SELECT max(ts) FROM events WHERE run_id = ?", (run_id,)).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def event_times(self, run_id: str) -> list[tuple[str, float]]:
        """(type, ts) of every journaled event of a run, in order: where its sessions began and ended."""
        rows = self.conn.execute("SELECT type, ts FROM events WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()
        return [(str(r[0]), float(r[1])) for r in rows]

    # ---- helpers ----------------------------------------------------------------------------------------------
    def _update(self, table: str, allowed: frozenset[str], where: str, key: tuple[Any, ...],
                values: dict[str, Any]) -> None:
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"unknown {table} columns: {sorted(unknown)}")
        if not values:
            return
        values = {k: self.redact(v) if isinstance(v, str) else v for k, v in values.items()}
        assignments = ", ".join(f"{name} = ?" for name in values)  # names come from the allowlist above
        self.conn.execute(f"UPDATE {table} SET {assignments} WHERE {where}", (*values.values(), *key))  # noqa: S608
