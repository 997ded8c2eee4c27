"""The SQLite store: WAL, migrations, the compat views, plan snapshots, private permissions."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

from orchard.core.journal import AgentExit, AttemptStart, Counts, Verdict
from orchard.core.model import AgentSpec, Outcome, Plan, Task, TaskStatus
from orchard.core.serialize import plan_from_dict, plan_to_dict
from orchard.core.transitions import Journal
from orchard.store import Store
from orchard.store.schema import MIGRATIONS


def sample_plan() -> Plan:
    agents = {"a": AgentSpec("a", "command", 2, {"command": ("x", "{prompt_file}"), "env": {"K": "v"}})}
    tasks = [Task("one", "p1", "a", files=("src/*.py",), verify=("pytest", "-q"), estimate_s=60.0),
             Task("two", "p2", "a", depends_on=("one",), track="t", retries=3)]
    return Plan.build(tasks, agents, tracks={"t": ("two",)}, base="main", parallel=3, source="plan.yaml")


def test_plan_snapshot_round_trips() -> None:
    plan = sample_plan()
    again = plan_from_dict(plan_to_dict(plan))
    assert again.tasks == plan.tasks and again.parallel == 3 and again.base == "main"
    assert again.agents["a"].option("command") == ("x", "{prompt_file}") and again.agents["a"].max_parallel == 2
    assert dict(again.tracks) == {"t": ("two",)}


def test_store_records_runs_tasks_attempts_events_and_views(tmp_path: Path) -> None:
    db = tmp_path / ".orchard" / "state.db"
    store = Store(db)
    plan = sample_plan()
    clock = [1000.0]
    journal = Journal(store, "r1", clock=lambda: clock[0])
    journal.run_started(plan=plan, base="main", base_commit="abc", integration_branch="orchard/r1/integration",
                        parallel=3, pid=42)
    clock[0] = 1001.0
    journal.task_started("one", counts=Counts(1, 0), branch="orchard/r1/task/one")
    attempt = journal.attempt_started(AttemptStart("one", 1, "a", "orchard/r1/task/one", "/wt", "abc", "/log"))
    clock[0] = 1003.5
    journal.agent_exited(attempt, AgentExit(exit_code=2, signal=None, duration_s=2.5))
    journal.attempt_finished(attempt, Verdict(Outcome.AGENT_ERROR, "boom"))
    journal.task_failed("one", counts=Counts(1, 1), reason="agent_error")
    assert store.plan("r1").tasks == plan.tasks
    assert [t.status for t in store.tasks("r1")] == [TaskStatus.FAILED, TaskStatus.PENDING]
    store.close()

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM workstream_status")]
    assert rows[0] == {"workstream_id": "one", "status": "failed", "agent_id": "a", "track": None,
                       "started_at": "1970-01-01T00:16:41.000Z", "completed_at": "1970-01-01T00:16:43.500Z",
                       "exit_code": 2, "attempt": 1, "error_message": "agent_error: boom", "run_id": "r1"}
    assert rows[1]["workstream_id"] == "two" and rows[1]["track"] == "t" and rows[1]["error_message"] is None
    log = [dict(r) for r in conn.execute("SELECT * FROM execution_log")]
    assert [(e["event_type"], e["workstream_id"], e["agent_id"]) for e in log] == [
        ("run.started", None, None), ("task.status", "one", "a"), ("attempt.started", "one", "a"),
        ("attempt.finished", "one", "a"), ("task.status", "one", "a")]
    assert log[-1] == {"id": 5, "timestamp": "1970-01-01T00:16:43.500Z", "workstream_id": "one", "agent_id": "a",
                       "event_type": "task.status", "message": "failed (agent_error)", "run_id": "r1"}
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_reopening_does_not_migrate_twice(tmp_path: Path) -> None:
    Store(tmp_path / "s.db").close()
    store = Store(tmp_path / "s.db")
    assert store.runs() == []
    store.close()


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    """`orchard status` started while `orchard run` creates the file: the schema is applied once, nobody fails."""
    for trial in range(5):
        db = tmp_path / str(trial) / "state.db"
        code = f"from pathlib import Path\nfrom orchard.store import Store\nStore(Path({str(db)!r})).close()"
        procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
                 for _ in range(6)]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, errors
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_durable_transactions_commit_at_full_synchronous_and_the_others_do_not(tmp_path: Path) -> None:
    """A power cut may lose an ordinary transaction (recovery makes it good from git) but not a durable one."""
    store = Store(tmp_path / "state.db")

    def level() -> int:
        return int(store.conn.execute("PRAGMA synchronous").fetchone()[0])

    normal, full = 1, 2
    with store.transaction():
        assert level() == normal
    with store.transaction(durable=True):
        assert level() == full
        with store.transaction():
            assert level() == full
    assert level() == normal
    with store.transaction():  # a durable savepoint in an ordinary transaction: a checkpoint syncs the WAL first,
        with store.transaction(durable=True):  # then copies it into the database file
            store.conn.execute("CREATE TABLE durable_part (x)")
        store.conn.execute("CREATE TABLE ordinary_part (x)")
    with store.transaction():
        store.conn.execute("CREATE TABLE later (x)")
    on_disk = (tmp_path / "state.db").read_bytes()
    assert b"durable_part" in on_disk and b"ordinary_part" in on_disk
    assert b"later" not in on_disk  # still only in the WAL: ordinary transactions are not checkpointed
    store.close()
