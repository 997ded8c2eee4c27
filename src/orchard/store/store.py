"""The durable records of runs: SQLite in WAL mode at `.orchard/state.db`, written as things happen.

`Store` is the SQLite `core.journal.Records`: the journal (`core.transitions.Journal`) decides what a transition
writes, this turns records into rows and back; enums become strings only here. Writes happen only inside
`transaction()` (nested ones are savepoints).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from orchard.core.events import OrchardEvent
from orchard.core.model import Outcome, Plan, RunStatus, TaskStatus
from orchard.core.records import AttemptRecord, ControlRequest, RunRecord, TaskRecord
from orchard.core.serialize import plan_from_dict, plan_to_dict, restore_secrets, split_secrets
from orchard.errors import DiskFull, NotRecorded, StoreUnreadable
from orchard.store.schema import migrate

R = TypeVar("R")

# The columns a save writes: everything but the keys and what never changes after the row is added.
RUN_SAVED = ("status", "finished_at", "pid", "reason", "cancel_requested", "integration_tip", "held",
             "baseline_red", "parallel")
TASK_SAVED = ("status", "attempts", "failures", "branch", "started_at", "finished_at", "error", "conflicts",
              "merged_commit", "feedback")
ATTEMPT_SAVED = ("finished_at", "outcome", "exit_code", "signal", "pid", "pgid", "end_commit", "detail", "tokens_in",
                 "tokens_out", "cost_usd", "session_id", "setup_s", "setup_skipped", "teardown_s",
                 "summary")
ATTEMPT_ADDED = ("run_id", "task_id", "number", "agent", "started_at", "worktree", "start_commit", "log_path", "slot",
                 "port", "host", "token")


def _column(value: Any) -> Any:
    """A record's field as SQLite stores it (enums as their names, flags as 0/1)."""
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, bool):
        return int(value)
    return value


def _record(cls: Callable[..., R], row: sqlite3.Row, names: frozenset[str]) -> R:
    """A row as the record `cls`, with its enum and flag columns typed."""
    values = {k: row[k] for k in row.keys() if k in names}  # noqa: SIM118 - sqlite3.Row has no __iter__ of keys
    if "status" in values:
        values["status"] = (RunStatus if cls is RunRecord else TaskStatus)(values["status"])
    if values.get("outcome") is not None:
        values["outcome"] = Outcome(values["outcome"])
    for flag in ("cancel_requested", "setup_skipped"):
        if flag in values:
            values[flag] = bool(values[flag])
    return cls(**values)


WAL_TRIES = 200  # 10 ms apart: two seconds for the other openers of a new store to finish


def _enter_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. Changing the journal mode does not wait for the busy timeout: while another process creates
    the same new store it fails at once with "database is locked", so it is tried again, a bounded number of times."""
    for attempt in range(WAL_TRIES):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or attempt == WAL_TRIES - 1:
                raise
            time.sleep(0.01)


def _digest(snapshot: str, secrets: str = "") -> str:
    """The hash of a plan snapshot, and of the agents' secrets kept beside the store (changing either is
    tampering)."""
    return hashlib.sha256(snapshot.encode() + (b"\0" + secrets.encode() if secrets else b"")).hexdigest()


_RUN_FIELDS = frozenset(f.name for f in fields(RunRecord))
_TASK_FIELDS = frozenset(f.name for f in fields(TaskRecord))
_ATTEMPT_FIELDS = frozenset(f.name for f in fields(AttemptRecord))


class Store:
    """Runs, tasks, attempts and the event journal of one repository."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._savepoints = 0
        self._sync_after = False  # a durable savepoint asked for its transaction to be synced
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            _enter_wal(self.conn)
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=30000")
            migrate(self.conn)
            os.chmod(path, 0o600)
        except (sqlite3.Error, OSError) as exc:
            hint = "" if os.access(path.parent, os.W_OK) else f" ({path.parent} is not writable)"
            raise StoreUnreadable(f"cannot open state store {path}: {exc}{hint}") from exc

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[None]:
        """One write transaction (taking the write lock at once); nested, a savepoint that a failure rolls back
        alone. A `durable` one is on disk when it returns (`synchronous=FULL`: the WAL is synced at its commit);
        the others may be lost to a power cut, which recovery makes good from git."""
        if self.conn.in_transaction:
            self._sync_after = self._sync_after or durable
            self._savepoints += 1
            name = f"sp{self._savepoints}"
            self.conn.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                if self.conn.in_transaction:  # a full disk may have rolled the whole transaction back already
                    self.conn.execute(f"ROLLBACK TO {name}")
                    self.conn.execute(f"RELEASE {name}")
                raise
            finally:
                self._savepoints -= 1
            self.conn.execute(f"RELEASE {name}")
            return
        try:
            with self._outermost(durable):
                yield
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                raise
            raise DiskFull(f"the disk holding {self.path} is full ({exc})") from exc

    @contextmanager
    def _outermost(self, durable: bool) -> Iterator[None]:
        if durable:  # the safety level cannot change inside a transaction
            self.conn.execute("PRAGMA synchronous=FULL")
        self._sync_after = False
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException:  # a commit that failed (a full disk) leaves the transaction open: end it
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            if self._sync_after and not durable:  # a durable part inside: a checkpoint syncs the WAL first
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            if durable:
                self.conn.execute("PRAGMA synchronous=NORMAL")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreUnreadable(f"cannot read state store {self.path}: {exc}") from exc

    # ---- writes (inside a transaction) -------------------------------------------------------------------------
    def add_run(self, run: RunRecord, plan: Plan, tasks: Sequence[TaskRecord]) -> None:
        snapshot, digest = self._snapshot(run.id, plan)
        self.conn.execute(
            "INSERT INTO runs (id, status, base, base_commit, integration_branch, plan_source, plan_json, plan_sha256,"
            " parallel, started_at, pid, integration_tip, environment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run.id, run.status.value, run.base, run.base_commit, run.integration_branch, run.plan_source,
             snapshot, digest, run.parallel, run.started_at, run.pid, run.integration_tip,
             run.environment),
        )
        self.add_tasks(tasks)

    def add_tasks(self, tasks: Sequence[TaskRecord]) -> None:
        self.conn.executemany(
            "INSERT INTO tasks (run_id, task_id, position, status, agent, track, parent) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(t.run_id, t.task_id, t.position, t.status.value, t.agent, t.track, t.parent) for t in tasks],
        )

    def _snapshot(self, run_id: str, plan: Plan) -> tuple[str, str]:
        """The plan's JSON snapshot and its hash; its secrets go to the private file beside the store."""
        data = plan_to_dict(plan)
        secrets = split_secrets(data, plan.redact)  # kept beside the store, never in it
        snapshot, kept = json.dumps(data), self._keep_secrets(run_id, secrets)
        return snapshot, _digest(snapshot, kept)

    def save_plan(self, run_id: str, plan: Plan) -> None:
        assert self.conn.in_transaction, "records are written inside a transaction"
        snapshot, digest = self._snapshot(run_id, plan)
        self.conn.execute("UPDATE runs SET plan_json = ?, plan_sha256 = ? WHERE id = ?", (snapshot, digest, run_id))

    def add_request(self, request: ControlRequest) -> int:
        cur = self.conn.execute("INSERT INTO requests (run_id, kind, data, created_at) VALUES (?, ?, ?, ?)",
                                (request.run_id, request.kind, request.data, request.created_at))
        return int(cur.lastrowid or 0)

    def close_request(self, request_id: int, *, result: str, applied_at: float) -> None:
        assert self.conn.in_transaction, "records are written inside a transaction"
        self.conn.execute("UPDATE requests SET applied_at = ?, result = ? WHERE id = ?",
                          (applied_at, result, request_id))

    def save_run(self, run: RunRecord) -> None:
        self._save("runs", RUN_SAVED, run, "id = ?", (run.id,))

    def save_task(self, task: TaskRecord) -> None:
        self._save("tasks", TASK_SAVED, task, "run_id = ? AND task_id = ?", (task.run_id, task.task_id))

    def add_attempt(self, attempt: AttemptRecord) -> int:
        columns, marks = ", ".join(ATTEMPT_ADDED), ", ".join("?" * len(ATTEMPT_ADDED))
        cur = self.conn.execute(f"INSERT INTO attempts ({columns}) VALUES ({marks})",  # noqa: S608 - fixed names
                                [_column(getattr(attempt, name)) for name in ATTEMPT_ADDED])
        return int(cur.lastrowid or 0)

    def save_attempt(self, attempt: AttemptRecord) -> None:
        self._save("attempts", ATTEMPT_SAVED, attempt, "id = ?", (attempt.id,))

    def add_event(self, event: OrchardEvent, agent: str | None) -> int:
        cur = self.conn.execute(
            "INSERT INTO events (run_id, ts, task_id, agent, type, message, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.run_id, event.ts, event.task_id, agent, event.type, event.message(), json.dumps(event.to_dict())),
        )
        return int(cur.lastrowid or 0)

    def _save(self, table: str, columns: tuple[str, ...], record: Any, where: str, key: tuple[Any, ...]) -> None:
        assert self.conn.in_transaction, "records are written inside a transaction"
        assignments = ", ".join(f"{name} = ?" for name in columns)  # names come from the tuples above
        values = [_column(getattr(record, name)) for name in columns]
        self.conn.execute(f"UPDATE {table} SET {assignments} WHERE {where}", (*values, *key))  # noqa: S608

    # ---- reads -------------------------------------------------------------------------------------------------
    def run(self, run_id: str | None = None) -> RunRecord:
        """The named run, or the latest one; NotRecorded if there is none."""
        if run_id:
            rows = self._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        else:
            rows = self._read("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1")
        if not rows:
            raise NotRecorded(f"no run '{run_id}' in {self.path}" if run_id else f"no runs recorded in {self.path}")
        return _record(RunRecord, rows[0], _RUN_FIELDS)

    def runs(self) -> list[RunRecord]:
        return [_record(RunRecord, r, _RUN_FIELDS) for r in self._read("SELECT * FROM runs ORDER BY started_at, rowid")]

    def plan(self, run_id: str) -> Plan:
        """The plan as the run started it. A snapshot whose hash no longer matches was changed since (by hand, or
        by an agent that could write here): orchard will not run what it says."""
        rows = self._read("SELECT plan_json, plan_sha256 FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise NotRecorded(f"no run '{run_id}' in {self.path}")
        snapshot, digest = rows[0]
        kept = self._kept_secrets(run_id)
        if digest is not None and (not isinstance(snapshot, str) or _digest(snapshot, kept) != digest):
            raise StoreUnreadable(f"{self.path}: the recorded plan of run {run_id} was changed after the run started"
                                  " (its hash does not match); orchard will not run it: start a new run instead")
        try:
            data = json.loads(snapshot)
            restore_secrets(data, json.loads(kept) if kept else {})
            return plan_from_dict(data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StoreUnreadable(f"{self.path}: the recorded plan of run {run_id} cannot be read ({exc!r})") from None

    def _secrets_file(self, run_id: str) -> Path:
        return self.path.parent / "secrets" / f"{run_id}.json"

    def _keep_secrets(self, run_id: str, secrets: dict[str, str]) -> str:
        """Write the secrets taken from a run's plan snapshot (agents' `env` values, credentials in prompts) to a
        private file beside the store, from which a resume reads them back; returns what was written, for the
        snapshot's hash."""
        if not secrets:
            return ""
        text = json.dumps(secrets, sort_keys=True)
        path = self._secrets_file(run_id)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        return text

    def _kept_secrets(self, run_id: str) -> str:
        try:
            return self._secrets_file(run_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise StoreUnreadable(f"cannot read the secrets of run {run_id}: {exc}") from None

    def tasks(self, run_id: str) -> list[TaskRecord]:
        rows = self._read("SELECT * FROM tasks WHERE run_id = ? ORDER BY position", (run_id,))
        return [_record(TaskRecord, r, _TASK_FIELDS) for r in rows]

    def task(self, run_id: str, task_id: str) -> TaskRecord:
        rows = self._read("SELECT * FROM tasks WHERE run_id = ? AND task_id = ?", (run_id, task_id))
        if not rows:
            raise NotRecorded(f"run {run_id} has no task '{task_id}'")
        return _record(TaskRecord, rows[0], _TASK_FIELDS)

    def attempts(self, run_id: str, task_id: str | None = None) -> list[AttemptRecord]:
        sql, args = "SELECT * FROM attempts WHERE run_id = ?", [run_id]
        if task_id is not None:
            sql, args = sql + " AND task_id = ?", [*args, task_id]
        return [_record(AttemptRecord, r, _ATTEMPT_FIELDS) for r in self._read(sql + " ORDER BY id", args)]

    def attempt(self, attempt_id: int) -> AttemptRecord:
        rows = self._read("SELECT * FROM attempts WHERE id = ?", (attempt_id,))
        if not rows:
            raise NotRecorded(f"no attempt {attempt_id} in {self.path}")
        return _record(AttemptRecord, rows[0], _ATTEMPT_FIELDS)

    def events(self, run_id: str, after_id: int = 0, task_id: str | None = None) -> list[tuple[int, dict[str, Any]]]:
        sql, args = "SELECT id, data FROM events WHERE run_id = ? AND id > ?", [run_id, after_id]
        if task_id is not None:
            sql, args = sql + " AND task_id = ?", [*args, task_id]
        return [(int(r[0]), json.loads(r[1])) for r in self._read(sql + " ORDER BY id", args)]

    def requests(self, run_id: str, *, open_only: bool = False) -> list[ControlRequest]:
        where = " AND applied_at IS NULL" if open_only else ""
        rows = self._read(f"SELECT * FROM requests WHERE run_id = ?{where} ORDER BY id", (run_id,))  # noqa: S608
        return [ControlRequest(**{k: r[k] for k in r.keys()}) for r in rows]  # noqa: SIM118

    def event_times(self, run_id: str) -> list[tuple[str, float]]:
        rows = self._read("SELECT type, ts FROM events WHERE run_id = ? ORDER BY id", (run_id,))
        return [(str(r[0]), float(r[1])) for r in rows]
