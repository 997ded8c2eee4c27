"""The run journal: each transition writes its records and its event in one transaction, on the SQLite store and
the in-memory one alike; a failure leaves nothing half written; observers hear only of what committed, and one that
raises is dropped, never the run."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from orchard.core.events import OrchardEvent
from orchard.core.journal import AgentExit, AttemptStart, Counts, Records, Verdict
from orchard.core.model import AgentSpec, MergeOutcome, Outcome, Plan, RunStatus, Task, TaskStatus
from orchard.core.redact import Redactor
from orchard.core.transitions import Journal
from orchard.errors import NotRecorded, StoreUnreadable
from orchard.store import Store
from orchard.store.schema import MIGRATIONS, migrate
from orchard.testing import InjectedFault, MemoryStore
from tests.conftest import PYTHON, run_orchard
from tests.test_engine_acceptance import plan_text
from tests.test_engine_acceptance import task as task_yaml

S = TaskStatus


def plan() -> Plan:
    agents = {"a": AgentSpec("a", "command", None, {"command": ("x",)})}
    return Plan.build([Task("one", "p1", "a"), Task("two", "p2", "a", depends_on=("one",))], agents)


@pytest.fixture(params=["sqlite", "memory"])
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Records]:
    if request.param == "memory":
        yield MemoryStore()
        return
    store = Store(tmp_path / ".orchard" / "state.db")
    yield store
    store.close()


def started(records: Records, *, redact: Callable[[str], str] = str) -> Journal:
    journal = Journal(records, "r1", clock=lambda: 1000.0, redact=redact)
    journal.run_started(plan=plan(), base="main", base_commit="a" * 40, integration_branch="orchard/r1/integration",
                        parallel=2, pid=1)
    return journal


def fail_next_event(records: Records) -> type[Exception]:
    """Make the next journal event fail to be written: an injected fault in memory, a trigger in SQLite (the way a
    full disk or a constraint would)."""
    if isinstance(records, MemoryStore):
        records.fail_on("add_event")
        return InjectedFault
    assert isinstance(records, Store)
    records.conn.execute("CREATE TEMP TRIGGER no_events BEFORE INSERT ON events "
                         "BEGIN SELECT RAISE(ABORT, 'disk full (injected)'); END")
    return sqlite3.IntegrityError


def test_a_transition_writes_its_records_and_its_event(records: Records) -> None:
    journal = started(records)
    journal.task_started("one", counts=Counts(1, 0), branch="orchard/r1/task/one")
    attempt = journal.attempt_started(AttemptStart("one", 1, "a", "orchard/r1/task/one", "/wt", "a" * 40, "/log"))
    journal.agent_exited(attempt, AgentExit(exit_code=3, signal=None, duration_s=1.5, cost_usd=0.25))
    journal.attempt_finished(attempt, Verdict(Outcome.AGENT_ERROR, "exit 3", feedback="try again"))
    task, row = records.task("r1", "one"), records.attempt(attempt)  # what the store holds, not the journal's copy
    assert (task.status, task.attempts, task.branch, task.started_at) == (S.RUNNING, 1, "orchard/r1/task/one", 1000.0)
    assert (task.error, task.feedback) == ("agent_error: exit 3", "try again")
    assert (row.outcome, row.exit_code, row.cost_usd, row.finished_at) == (Outcome.AGENT_ERROR, 3, 0.25, 1000.0)
    types = [e["type"] for e in journal.events()]
    assert types == ["run.started", "task.status", "attempt.started", "attempt.finished"]
    finished = journal.events()[-1]
    assert (finished["outcome"], finished["duration_s"], finished["cost_usd"]) == ("agent_error", 1.5, 0.25)


def test_a_failed_transition_leaves_nothing_behind_and_tells_no_one(records: Records) -> None:
    journal = started(records)
    heard: list[OrchardEvent] = []
    journal.subscribe(heard.append)
    error = fail_next_event(records)
    with pytest.raises(error):
        journal.task_blocked("two", counts=Counts(0, 0), reason="dependency 'one' did not merge")
    for task in (journal.task("two"), records.task("r1", "two")):  # the row change was rolled back, in both
        assert (task.status, task.error, task.finished_at) == (S.PENDING, "", None)
    assert heard == [] and [e["type"] for e in journal.events()] == ["run.started"]


def test_a_failed_savepoint_undoes_only_itself(records: Records) -> None:
    journal = started(records)
    heard: list[OrchardEvent] = []
    journal.subscribe(heard.append)
    error = fail_next_event(records)
    with journal.atomic():
        with pytest.raises(error):
            journal.task_blocked("two", counts=Counts(0, 0), reason="blocked")  # its event cannot be written
        assert heard == []
        if isinstance(records, Store):
            records.conn.execute("DROP TRIGGER no_events")
        journal.task_queued("one", counts=Counts(0, 0))
        assert heard == []  # nothing is published before the outermost transaction commits
    assert journal.task("two").status is S.PENDING and journal.task("one").status is S.QUEUED
    assert records.task("r1", "two").status is S.PENDING and records.task("r1", "one").status is S.QUEUED
    assert [(e.type, getattr(e, "task", None)) for e in heard] == [("task.status", "one")]


def test_the_store_rolls_back_a_transaction_that_raises(records: Records) -> None:
    started(records)
    before = records.task("r1", "one")
    with pytest.raises(RuntimeError), records.transaction():
        records.save_task(replace(before, status=S.FAILED, error="half done"))
        raise RuntimeError("crash half-way")
    assert records.task("r1", "one") == before


def test_observers_hear_after_commit_and_a_failing_one_is_dropped(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = Store(db)
    journal = started(store)
    seen_by_another_reader: list[str] = []

    def reader(event: OrchardEvent) -> None:  # another connection sees the change only once it is committed
        with sqlite3.connect(db) as other:
            seen_by_another_reader.append(other.execute("SELECT status FROM tasks WHERE task_id = 'one'").fetchone()[0])

    calls: list[str] = []

    def broken(event: OrchardEvent) -> None:
        calls.append(event.type)
        raise ValueError("observer bug")

    later: list[str] = []
    for observer in (reader, broken, lambda e: later.append(e.type)):
        journal.subscribe(observer)
    journal.task_queued("one", counts=Counts(0, 0))
    journal.task_started("one", counts=Counts(1, 0), branch="b")
    assert seen_by_another_reader == ["queued", "running"]
    assert calls == ["task.status"]  # dropped after its first failure; the transition itself did not fail
    assert later == ["task.status", "task.status"]  # the others go on hearing
    store.close()


def test_secrets_are_redacted_in_records_and_events(records: Records) -> None:
    redact = Redactor({"API_TOKEN": "sk-secret-123456"})
    journal = started(records, redact=redact)
    journal.task_conflicted("one", counts=Counts(1, 1), reason="conflict on sk-secret-123456.txt")
    journal.merge_finished("two", MergeOutcome.CONFLICT, conflicts=("sk-secret-123456.txt",),
                           feedback="see sk-secret-123456")
    text = repr(journal.tasks()) + repr(journal.events())
    assert "sk-secret-123456" not in text and "[REDACTED:API_TOKEN]" in text


def test_merges_record_the_commit_and_the_integration_tip(records: Records) -> None:
    journal = started(records)
    journal.merge_finished("one", MergeOutcome.MERGED, commit="b" * 40, tip="b" * 40)
    assert journal.task("one").merged_commit == "b" * 40 and journal.run().integration_tip == "b" * 40
    journal.merge_recovered("two", commit="c" * 40, tip="c" * 40)
    two = journal.task("two")
    assert (two.status, two.merged_commit, journal.run().integration_tip) == (S.MERGED, "c" * 40, "c" * 40)
    kinds = [(e["type"], e.get("result") or e.get("status")) for e in journal.events()[1:]]
    assert kinds == [("merge.finished", "merged"), ("merge.finished", "merged"), ("task.status", "merged")]


def test_the_run_finishes_with_its_summary(records: Records) -> None:
    journal = started(records)
    journal.task_failed("one", counts=Counts(1, 1))
    journal.task_blocked("two", counts=Counts(0, 0), reason="dependency 'one' did not merge")
    summary = journal.run_finished(RunStatus.FAILED, reason="")
    # blocked is its own count, never inside `failed` (the two used to disagree with `counts`)
    assert (summary["failed"], summary["blocked"]) == (1, 1) and summary["counts"] == {"failed": 1, "blocked": 1}
    assert journal.run().status is RunStatus.FAILED and journal.events()[-1]["status"] == "failed"


def test_unknown_runs_and_tasks_are_not_recorded(records: Records) -> None:
    with pytest.raises(NotRecorded):
        records.run()
    journal = started(records)
    with pytest.raises(NotRecorded) as caught:
        journal.task("nope")
    assert caught.value.exit_code == 2


def test_a_corrupt_store_is_unreadable_with_exit_3(tmp_path: Path, repo: Path) -> None:
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnreadable) as caught:
        Store(bad)
    assert caught.value.exit_code == 3
    (repo / ".orchard").mkdir()
    (repo / ".orchard" / "state.db").write_bytes(b"garbage" * 500)
    result = run_orchard("status", cwd=repo)
    assert result.code == 3 and "cannot open state store" in result.err and "Traceback" not in result.err


def store_at_version(db: Path, version: int, status: str) -> sqlite3.Connection:
    """A store file as an orchard of schema `version` wrote it, with one run, 'old', recorded as `status`."""
    conn = sqlite3.connect(db, isolation_level=None)
    for script in MIGRATIONS[:version]:
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("INSERT INTO runs (id, status, base, base_commit, integration_branch, plan_source, plan_json,"
                 " parallel, started_at) VALUES ('old', ?, 'main', ?, 'orchard/old/integration',"
                 " 'plan.yaml', '{}', 2, 1.0)", (status, "d" * 40))
    return conn


def test_a_version_1_store_is_upgraded_with_the_integration_tip_filled_in(tmp_path: Path) -> None:
    """Migration 2 added `runs.integration_tip`; a run recorded before it resumes from its base commit."""
    db = tmp_path / "v1.db"
    store_at_version(db, 1, "interrupted").close()
    store = Store(db)
    run = store.run("old")
    assert (run.status, run.integration_tip) == (RunStatus.INTERRUPTED, "d" * 40)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    migrate(store.conn)  # running it again changes nothing
    assert store.run("old") == run
    store.close()


def test_a_version_7_store_is_upgraded_with_its_attempts_on_this_machine(tmp_path: Path) -> None:
    """Migration 8 added `attempts.host` and `attempts.token`; an attempt recorded before them ran here."""
    db = tmp_path / "v7.db"
    conn = store_at_version(db, 7, "failed")
    conn.execute("INSERT INTO attempts (run_id, task_id, number, agent, started_at, worktree, start_commit, log_path)"
                 " VALUES ('old', 'one', 1, 'a', 2.0, '/wt', ?, '/log')", ("d" * 40,))
    conn.close()
    store = Store(db)
    (attempt,) = store.attempts("old")
    assert (attempt.task_id, attempt.host, attempt.token) == ("one", "local", "")
    columns = {row[1]: (row[2], row[3], row[4]) for row in store.conn.execute("PRAGMA table_info(attempts)")}
    assert columns["host"] == ("TEXT", 1, "'local'") and columns["token"] == ("TEXT", 1, "''")
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 8
    store.close()


def test_an_attempts_host_and_token_round_trip_and_default_to_this_machine(records: Records) -> None:
    journal = started(records)
    journal.task_started("one", counts=Counts(1, 0), branch="orchard/r1/task/one")
    away = journal.attempt_started(AttemptStart("one", 1, "a", "orchard/r1/task/one", "/wt", "a" * 40, "/log",
                                                host="node-x", token="abc"))
    journal.agent_exited(away, AgentExit(exit_code=3, signal=None, duration_s=1.0))
    journal.attempt_finished(away, Verdict(Outcome.AGENT_ERROR, "exit 3"))  # saved again: host and token stay
    here = journal.attempt_started(AttemptStart("one", 2, "a", "orchard/r1/task/one", "/wt", "a" * 40, "/log2"))
    for row in (records.attempt(away), records.attempts("r1", "one")[0]):  # the store's rows, not the journal's copy
        assert (row.number, row.host, row.token, row.outcome) == (1, "node-x", "abc", Outcome.AGENT_ERROR)
    assert (records.attempt(here).host, records.attempt(here).token) == ("local", "")


def test_a_store_from_a_newer_orchard_is_refused_not_misread(tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    Store(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreUnreadable, match="newer than this orchard"):
        Store(db)


@pytest.mark.parametrize("damage", ["pages", "plan"])
def test_a_store_damaged_after_a_run_makes_resume_exit_3_without_a_traceback(
        repo: Path, write_plan: Callable[[str], Path], damage: str) -> None:
    plan = write_plan(plan_text(task_yaml("t", "@exit 1")))
    assert run_orchard("run", str(plan), cwd=repo).code == 1
    db = repo / ".orchard" / "state.db"
    if damage == "pages":  # what a bad disk or a half-written copy leaves: the header intact, pages garbage
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = bytearray(db.read_bytes())
        data[4096:] = b"\xde\xad" * ((len(data) - 4096) // 2)
        db.write_bytes(bytes(data))
    else:  # a snapshot recorded before its hash was (migration 3), then damaged
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE runs SET plan_json = '{\"tasks\": 7}', plan_sha256 = NULL")
    result = run_orchard("retry", "t", cwd=repo)
    assert result.code == 3, result.out + result.err
    assert "state" in result.err and "Traceback" not in result.err


@pytest.mark.parametrize("command", ["run", "resume", "status", "logs"])
def test_a_read_only_orchard_directory_is_a_clear_exit_3(
        repo: Path, write_plan: Callable[[str], Path], command: str) -> None:
    """Read-only even for root: `.orchard` bind-mounted read-only in a mount namespace of bubblewrap's."""
    bwrap = shutil.which("bwrap")
    assert bwrap, "bubblewrap is missing: `make system` installs it (apt-get install bubblewrap)"
    plan = write_plan(plan_text(task_yaml("t", "@write t.txt t")))
    assert run_orchard("run", str(plan), cwd=repo).code == 0
    orchard_dir = repo / ".orchard"
    before = sorted(str(p) for p in orchard_dir.rglob("*"))
    args = {"run": ["run", str(plan)], "resume": ["resume"], "status": ["status"], "logs": ["logs", "t"]}[command]
    proc = subprocess.run([bwrap, "--dev-bind", "/", "/", "--ro-bind", str(orchard_dir), str(orchard_dir),
                           "--chdir", str(repo), "--", PYTHON, "-m", "orchard", *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "not writable" in proc.stderr or "make it writable" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(str(p) for p in orchard_dir.rglob("*")) == before  # nothing lost
