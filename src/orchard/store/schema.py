"""Numbered schema migrations for `.orchard/state.db`; `PRAGMA user_version` records how far a file has come."""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: runs, tasks, attempts, the append-only journal, and the views the workstream guide's users query.
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        base TEXT NOT NULL,
        base_commit TEXT NOT NULL,
        integration_branch TEXT NOT NULL,
        plan_source TEXT NOT NULL,
        plan_json TEXT NOT NULL,
        parallel INTEGER NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        pid INTEGER,
        reason TEXT NOT NULL DEFAULT '',
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE tasks (
        run_id TEXT NOT NULL REFERENCES runs(id),
        task_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        status TEXT NOT NULL,
        agent TEXT NOT NULL,
        track TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        branch TEXT,
        started_at REAL,
        finished_at REAL,
        error TEXT NOT NULL DEFAULT '',
        conflicts TEXT NOT NULL DEFAULT '',
        merged_commit TEXT,
        feedback TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (run_id, task_id)
    );
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        agent TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        outcome TEXT,
        exit_code INTEGER,
        signal INTEGER,
        pid INTEGER,
        pgid INTEGER,
        worktree TEXT NOT NULL,
        start_commit TEXT NOT NULL,
        end_commit TEXT,
        log_path TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        tokens_in INTEGER NOT NULL DEFAULT 0,
        tokens_out INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        session_id TEXT
    );
    CREATE INDEX attempts_task ON attempts(run_id, task_id, number);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        ts REAL NOT NULL,
        task_id TEXT,
        agent TEXT,
        type TEXT NOT NULL,
        message TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_run ON events(run_id, id);
    CREATE VIEW workstream_status AS
        SELECT t.task_id AS workstream_id, t.status AS status, t.agent AS agent_id, t.track AS track,
               strftime('%Y-%m-%dT%H:%M:%fZ', t.started_at, 'unixepoch') AS started_at,
               strftime('%Y-%m-%dT%H:%M:%fZ', t.finished_at, 'unixepoch') AS completed_at,
               (SELECT a.exit_code FROM attempts a WHERE a.run_id = t.run_id AND a.task_id = t.task_id
                ORDER BY a.number DESC LIMIT 1) AS exit_code,
               t.attempts AS attempt, NULLIF(t.error, '') AS error_message, t.run_id AS run_id
        FROM tasks t
        WHERE t.run_id = (SELECT id FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1)
        ORDER BY t.position;
    CREATE VIEW execution_log AS
        SELECT e.id AS id, strftime('%Y-%m-%dT%H:%M:%fZ', e.ts, 'unixepoch') AS timestamp,
               e.task_id AS workstream_id, e.agent AS agent_id, e.type AS event_type, e.message AS message,
               e.run_id AS run_id
        FROM events e;
    """,
    # 2: orchard's own record of the integration branch tip, to restore it if an agent moves the ref.
    """
    ALTER TABLE runs ADD COLUMN integration_tip TEXT;
    UPDATE runs SET integration_tip = base_commit;
    """,
    # 3: the hash of the plan snapshot taken at run start, checked whenever the snapshot is read back.
    """
    ALTER TABLE runs ADD COLUMN plan_sha256 TEXT;
    """,
    # 4: an attempt's reserved slot and ports (a resume tears down with them), its setup and teardown times, and why
    # a run's new attempts wait for the machine.
    """
    ALTER TABLE attempts ADD COLUMN slot INTEGER;
    ALTER TABLE attempts ADD COLUMN port INTEGER;
    ALTER TABLE attempts ADD COLUMN setup_s REAL;
    ALTER TABLE attempts ADD COLUMN setup_skipped INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE attempts ADD COLUMN teardown_s REAL;
    ALTER TABLE runs ADD COLUMN held TEXT NOT NULL DEFAULT '';
    """,
    # 5: the verify commands the preflight found failing on the base, before any agent ran, and the variables at
    # `orchard run` that setup and verify keep using in every later session.
    """
    ALTER TABLE runs ADD COLUMN baseline_red TEXT NOT NULL DEFAULT '';
    ALTER TABLE runs ADD COLUMN environment TEXT NOT NULL DEFAULT '';
    """,
    # 6: live-control requests another process writes for a run (`orchard cancel TASK`, `set`, `agents add`) and
    # what its session did with them.
    """
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at REAL NOT NULL,
        applied_at REAL,
        result TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX requests_open ON requests(run_id) WHERE applied_at IS NULL;
    """,
    # 7: the agent's own summary of each attempt (what its dependents' prompts are told), and the task that added a
    # task to its run (`orchard add` from inside an attempt).
    """
    ALTER TABLE attempts ADD COLUMN summary TEXT NOT NULL DEFAULT '';
    ALTER TABLE tasks ADD COLUMN parent TEXT;
    """,
    # 8: the machine each attempt ran on ('local' for this one, else a cluster node's name) and the random token
    # naming the attempt there; attempts recorded before either ran here.
    """
    ALTER TABLE attempts ADD COLUMN host TEXT NOT NULL DEFAULT 'local';
    ALTER TABLE attempts ADD COLUMN token TEXT NOT NULL DEFAULT '';
    """,
)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the file up to the newest schema in one write transaction.

    The version is read only once the write lock is held: two processes opening a new file at once (`orchard run`
    and `orchard status`, say) must not both apply the same migration.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > len(MIGRATIONS):  # written by a newer orchard: its rows may mean what this one cannot read
            raise sqlite3.DatabaseError(f"schema version {current} is newer than this orchard's {len(MIGRATIONS)}")
        for script in MIGRATIONS[current:]:
            for statement in _statements(script):
                conn.execute(statement)
        if current < len(MIGRATIONS):
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """A migration script cut into single statements (`executescript` would commit the open transaction)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return statements
