"""The workstream guide's files for a plan with `compat: workstreams`: `.state/orchestration.db` and
`logs/orchestrator.log` in the user's repository, kept up to date by a journal observer as the run goes.

They are written for the guide's monitoring commands (`sqlite3`, `tail`, `grep`) and never read back: the journal
stays the run's only state. Writing them never stops a run: the first error is logged and the observer turns off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from orchard.core.events import (
    AttemptFinished,
    AttemptStarted,
    MergeFinished,
    OrchardEvent,
    PreflightChecked,
    RunFinished,
    RunNote,
    RunStarted,
    TaskEvent,
    TaskStatusChanged,
    TaskWarning,
    iso,
)
from orchard.core.journal import RunJournal
from orchard.core.model import MergeOutcome, Outcome, RunStatus, TaskStatus
from orchard.core.records import TaskRecord
from orchard.core.safe_text import safe_line

log = logging.getLogger("orchard")

DB_PATH = ".state/orchestration.db"
LOG_PATH = "logs/orchestrator.log"
BUSY_TIMEOUT_S = 2.0  # a user's `sqlite3` may hold the file a moment; the engine's loop waits no longer than this
UNLOGGED = frozenset({"agent.activity", "queue.changed"})  # several a second: the dashboard's and `orchard logs`'

SCHEMA = """
CREATE TABLE IF NOT EXISTS workstream_status (
    workstream_id TEXT PRIMARY KEY, status TEXT NOT NULL, agent_id TEXT, track TEXT, started_at TEXT,
    completed_at TEXT, exit_code INTEGER, attempt INTEGER NOT NULL DEFAULT 0, error_message TEXT);
CREATE TABLE IF NOT EXISTS execution_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT NOT NULL, workstream_id TEXT, agent_id TEXT,
    event_type TEXT NOT NULL, message TEXT);
CREATE TABLE IF NOT EXISTS orchard_run (run_id TEXT NOT NULL);
"""
UPSERT = """INSERT INTO workstream_status VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT(workstream_id) DO UPDATE SET status = excluded.status, agent_id = excluded.agent_id,
    track = excluded.track, started_at = excluded.started_at, completed_at = excluded.completed_at,
    exit_code = excluded.exit_code, attempt = excluded.attempt, error_message = excluded.error_message"""

Entry = tuple[str, str]  # an `execution_log` entry: event type (started, completed, failed, retry), message


def log_time(ts: float) -> str:
    """Local time as Python's logging writes it by default: `2026-12-03 14:02:11,123`."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f",{int(ts * 1000) % 1000:03d}"


def exclude_line(root: Path, path: Path) -> str | None:
    """The `info/exclude` pattern of exactly `path` (anchored at the repository root); None outside it."""
    try:
        relative = path.relative_to(root).as_posix()
    except ValueError:
        return None
    return "/" + "".join("\\" + c if c in "*?[]\\!# " else c for c in relative)


def add_excludes(git_dir: Path, lines: list[str]) -> None:
    """Append to the repository's `info/exclude` the lines it lacks (never twice)."""
    exclude = git_dir / "info" / "exclude"
    text = exclude.read_text(encoding="utf-8") if exclude.is_file() else ""
    missing = [line for line in lines if line not in text.splitlines()]
    if missing:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a", encoding="utf-8") as out:
            out.write(("\n" if text and not text.endswith("\n") else "")
                      + "# orchard (compat: workstreams): the workstream guide's files\n" + "\n".join(missing) + "\n")


def connect(path: Path) -> sqlite3.Connection:
    """The database in WAL mode with a busy timeout, so that a user's `sqlite3` reads it while the run writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")  # a view of the journal, which is the durable record
    db.executescript(SCHEMA)
    return db


def guide_status(status: TaskStatus) -> str:
    """The guide's vocabulary: merged is `completed`; an end without merging (cancelled too) `failed`; an agent,
    verify or merge at work `running`; waiting (pending, queued, paused) `pending`."""
    if status is TaskStatus.MERGED:
        return "completed"
    if status.terminal:
        return "failed"
    return "running" if status.active else "pending"


def status_row(task: TaskRecord, exit_code: int | None) -> tuple[object, ...]:
    """The `workstream_status` row of a task record (times ISO 8601 UTC, as in `.orchard/state.db`'s views)."""
    return (task.task_id, guide_status(task.status), task.agent, task.track, iso(task.started_at),
            iso(task.finished_at), exit_code, task.attempts, task.error or None)


class WorkstreamFiles:
    """The observer: each task event brings its task's `workstream_status` row up to the journal's record, adds an
    `execution_log` entry for the guide's event types, and every event but the most frequent writes a log line."""

    def __init__(self, journal: RunJournal, root: Path, git_dir: Path, *, log_file: str | None = None) -> None:
        self.journal = journal
        self.db_path = root / DB_PATH
        self.log_path = Path(os.path.normpath(root / (log_file or LOG_PATH)))
        self.off = False
        self._db: sqlite3.Connection | None = None
        self._log: TextIO | None = None
        self._shown: dict[str, str] = {}  # each row's status in the guide's vocabulary
        self._exits: dict[str, int | None] = {}  # each task's latest exit code
        self._lock = threading.Lock()
        excludes = ["/.state/", *filter(None, [exclude_line(root, self.log_path)])]
        self._guarded(lambda: self._open(git_dir, excludes))

    def __call__(self, event: OrchardEvent) -> None:
        if not self.off and event.type not in UNLOGGED:
            self._guarded(lambda: self._handle(event))

    def close(self) -> None:
        with self._lock:
            self.off = True
            try:
                if self._log is not None:
                    self._log.close()
            finally:
                if self._db is not None:
                    self._db.close()
                self._db, self._log = None, None

    def _guarded(self, work: Callable[[], None]) -> None:
        """Do `work`; an error writing the files is logged once and turns the observer off."""
        try:
            with self._lock:
                work()
        except (OSError, sqlite3.Error) as exc:
            self.off = True
            log.warning("compat: workstreams: stopped writing %s and %s (the run goes on): %s", self.db_path,
                        self.log_path, exc)
            with contextlib.suppress(OSError, sqlite3.Error):  # said once already
                self.close()

    def _open(self, git_dir: Path, excludes: list[str]) -> None:
        add_excludes(git_dir, excludes)  # first: the files never show in `git status`
        self._db = connect(self.db_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("a", encoding="utf-8")

    def _handle(self, event: OrchardEvent) -> None:
        db = self._db
        assert db is not None, "opened before it is subscribed"
        entry = self._entry(event)
        with db:  # one transaction per event
            if isinstance(event, RunStarted):
                self._started(db, event)
            elif isinstance(event, TaskStatusChanged | AttemptFinished):
                if isinstance(event, AttemptFinished):
                    self._exits[event.task] = event.exit_code
                db.execute(UPSERT, status_row(self.journal.task(event.task), self._exits.get(event.task)))
            if entry is not None and isinstance(event, TaskEvent):
                db.execute("INSERT INTO execution_log (timestamp, workstream_id, agent_id, event_type, message) "
                           "VALUES (?, ?, ?, ?, ?)", (iso(event.ts), event.task, self._agent(event), *entry))
        self._write_line(event, entry)

    def _started(self, db: sqlite3.Connection, event: RunStarted) -> None:
        """A new run replaces the rows; a resume of the run they hold keeps its log and brings its rows up to date
        (a resume of another run replaces them too)."""
        held = db.execute("SELECT run_id FROM orchard_run").fetchone()
        if not event.resumed or held is None or held[0] != event.run_id:
            for table in ("workstream_status", "execution_log", "orchard_run"):
                db.execute(f"DELETE FROM {table}")  # noqa: S608 - the names are the constants above
            db.execute("INSERT INTO orchard_run VALUES (?)", (event.run_id,))
        for attempt in sorted(self.journal.attempts(), key=lambda a: a.number):
            self._exits[attempt.task_id] = attempt.exit_code
        for task in self.journal.tasks():
            db.execute(UPSERT, status_row(task, self._exits.get(task.task_id)))
            self._shown[task.task_id] = guide_status(task.status)

    def _entry(self, event: OrchardEvent) -> Entry | None:
        """The `execution_log` entry an event makes, if any: an attempt started, a task merged (completed) or ended
        without merging (failed), or a task waiting again after it ran or failed (retry)."""
        if isinstance(event, AttemptStarted):
            return "started", f"started on {event.agent} (attempt {event.attempt})"
        if not isinstance(event, TaskStatusChanged):
            return None
        status, before = guide_status(event.status), self._shown.get(event.task)
        self._shown[event.task] = status
        error = self.journal.task(event.task).error  # the failed attempt's outcome and detail, or the reason
        if status == "completed":
            return "completed", f"completed (attempt {event.attempt})"
        if status == "failed":
            why = error or event.reason
            return "failed", event.status.value + (f": {why}" if why and why != event.status.value else "")
        if status == "pending" and before in ("running", "failed"):
            return "retry", f"retry after {error}" if error else (event.reason or "retry")
        return None

    def _agent(self, event: TaskEvent) -> str:
        return event.agent if isinstance(event, AttemptStarted) else self.journal.task(event.task).agent

    def _write_line(self, event: OrchardEvent, entry: Entry | None) -> None:
        if self._log is None:
            return
        if isinstance(event, TaskEvent):
            text = f"{event.task}: {entry[1] if entry else event.message()}"
        elif isinstance(event, RunStarted | RunFinished):
            text = event.message()  # "run <id> started: …"
        else:
            text = f"run {event.run_id}: {event.message()}"
        self._log.write(f"{log_time(event.ts)} [{level(event, entry)}] {safe_line(text)}\n")
        self._log.flush()  # `tail -f` sees each line as it happens


def level(event: OrchardEvent, entry: Entry | None) -> str:
    """INFO; WARNING for what went wrong and may still come right; ERROR for a task or a run that failed."""
    if entry is not None:
        return {"failed": "ERROR", "retry": "WARNING"}.get(entry[0], "INFO")
    if isinstance(event, RunNote):
        return event.level.upper() if event.level.upper() in ("WARNING", "ERROR") else "INFO"
    if isinstance(event, RunFinished):
        return {RunStatus.COMPLETED: "INFO", RunStatus.INTERRUPTED: "WARNING",
                RunStatus.CANCELLED: "WARNING"}.get(event.status, "ERROR")
    wrong = (getattr(event, "passed", True) is False or isinstance(event, TaskWarning)
             or (isinstance(event, AttemptFinished) and event.outcome is not Outcome.SUCCESS)
             or (isinstance(event, MergeFinished) and event.result in (MergeOutcome.CONFLICT, MergeOutcome.ERROR))
             or (isinstance(event, PreflightChecked) and event.outcome != "passed"))
    return "WARNING" if wrong else "INFO"


def attach(journal: RunJournal, root: Path, git_dir: Path, *, log_file: str | None = None) -> WorkstreamFiles:
    """Keep the workstream guide's files of `journal`'s run from its next event on; `close()` it when the session
    ends. `log_file` (relative to `root`) replaces `logs/orchestrator.log`."""
    files = WorkstreamFiles(journal, root, git_dir, log_file=log_file)
    journal.subscribe(files)
    return files
