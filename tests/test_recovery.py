"""Crash recovery (runtime/recovery.py) at exact crash points: what a dead session left open is closed, a merge it
made but never recorded is found instead of made again, and an internal error ends an attempt, not the run.

The crash points are made exact by rewinding a real run's journal to the moment in question (what a SIGKILL there
leaves on disk), or by stopping the orchestrator with SIGKILL while its agent waits at a rendezvous.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import orchard
from orchard.core.model import Outcome, RunStatus
from orchard.testing import MemoryStore
from tests.conftest import (
    PYTHON,
    RENDEZVOUS,
    Result,
    git,
    merged_tasks,
    own_git,
    query,
    run_orchard,
    run_processes,
    wait_for,
)
from tests.test_engine_acceptance import plan_text, task


def merges_of(repo: Path, run_id: str, task_id: str) -> list[str]:
    """Merge commits on the integration branch's first-parent line that merged `task_id`."""
    return [commit for commit, task in merged_tasks(repo, f"orchard/{run_id}/integration") if task == task_id]


def test_a_killed_session_leaves_its_attempt_closed_as_interrupted_on_resume(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    # unconfined: a sandboxed agent dies with orchard (`--die-with-parent`); this is the leftover a resume must reap
    plan = write_plan("sandbox: none\n" + plan_text(task("slow", "@print ready\n@if-attempt 1 @sleep 60\n"
                                                                    "@write slow.txt s")))
    proc = subprocess.Popen([PYTHON, "-m", "orchard", "run", str(plan), "--json"], cwd=repo,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: bool(query(repo, "SELECT id FROM runs")), "the run is recorded", 60)
        run_id = str(query(repo, "SELECT id FROM runs")[0][0])
        log = repo / ".orchard" / "runs" / run_id / "logs" / "slow.1.log"
        wait_for(lambda: log.exists() and "ready" in log.read_text(), "the agent is running", 60)  # a ready line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert run_processes(run_id), "the agent should outlive the killed orchestrator"
    assert query(repo, "SELECT outcome, finished_at FROM attempts") == [(None, None)]  # what the crash left

    resumed = run_orchard("resume", "--json", cwd=repo)
    assert resumed.code == 0, resumed.err
    rows = query(repo, "SELECT number, outcome, detail, finished_at IS NOT NULL FROM attempts ORDER BY number")
    assert rows == [(1, "interrupted", "orchestrator stopped", 1), (2, "success", "", 1)]
    events = resumed.ndjson()
    assert events[0]["type"] == "run.started" and events[0]["resumed"] is True
    closed = [e for e in events if e["type"] == "attempt.finished" and e["attempt"] == 1]
    assert [(e["outcome"], e["detail"]) for e in closed] == [("interrupted", "orchestrator stopped")]
    assert any("killed 1 leftover process" in e.get("text", "") for e in events)
    assert run_processes(run_id) == []


def _rewind_to_merging(repo: Path, task_id: str, *, recorded: bool) -> tuple[str, str]:
    """Rewrite a completed run's journal to the moment its last merge (of `task_id`) was made in git but the session
    died: before recording anything of it (`recorded=False`), or after recording the merge but before the task's
    status (`recorded=True`). Returns (run id, the integration tip)."""
    db = repo / ".orchard" / "state.db"
    with sqlite3.connect(db) as conn:
        run_id, tip = conn.execute("SELECT id, integration_tip FROM runs").fetchone()
        merged_commit = conn.execute("SELECT merged_commit FROM tasks WHERE task_id = ?", (task_id,)).fetchone()[0]
        assert merged_commit == tip, "the task chosen must be the last one merged"
        parent = git(repo, "rev-parse", f"{tip}^1").strip()
        cut = conn.execute("SELECT id FROM events WHERE type = 'merge.finished' AND task_id = ?",
                           (task_id,)).fetchone()[0]
        conn.execute("DELETE FROM events WHERE id >= ?", (cut + 1 if recorded else cut,))
        conn.execute("UPDATE tasks SET status = 'merging', finished_at = NULL, merged_commit = ? WHERE task_id = ?",
                     (merged_commit if recorded else None, task_id))
        conn.execute("UPDATE runs SET status = 'running', finished_at = NULL, integration_tip = ?",
                     (tip if recorded else parent,))
    return run_id, tip


def _two_task_run(repo: Path, write_plan: Callable[[str], Path]) -> None:
    tasks = task("first", "@write first.txt 1") + task("second", "@write second.txt 2", "    depends_on: [first]\n")
    assert run_orchard("run", str(write_plan(plan_text(tasks))), cwd=repo).code == 0


def test_a_merge_the_dead_session_made_but_never_recorded_is_found_not_made_again(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    _two_task_run(repo, write_plan)
    run_id, tip = _rewind_to_merging(repo, "second", recorded=False)
    resumed: Result = run_orchard("resume", "--json", cwd=repo)
    assert resumed.code == 0, resumed.err
    assert merges_of(repo, run_id, "second") == [tip]  # exactly one merge commit, the one the dead session made
    assert git(repo, "rev-parse", f"orchard/{run_id}/integration").strip() == tip
    events = resumed.ndjson()
    assert not [e for e in events if e["type"] == "attempt.started"]
    assert [(e["type"], e.get("commit")) for e in events if e.get("task") == "second"] == [
        ("merge.finished", tip), ("task.status", None)]
    assert query(repo, "SELECT status, merged_commit FROM tasks WHERE task_id = 'second'") == [("merged", tip)]
    assert query(repo, "SELECT integration_tip, status FROM runs") == [(tip, "completed")]


def test_a_recorded_merge_whose_status_the_dead_session_never_wrote_is_not_merged_again(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    _two_task_run(repo, write_plan)
    run_id, tip = _rewind_to_merging(repo, "second", recorded=True)
    resumed = run_orchard("resume", "--json", cwd=repo)
    assert resumed.code == 0, resumed.err
    assert merges_of(repo, run_id, "second") == [tip]
    mine = [(e["type"], e.get("status")) for e in resumed.ndjson() if e.get("task") == "second"]
    assert mine == [("task.status", "merged")]  # the merge itself was journaled by the session that made it
    merged_events = query(repo, "SELECT count(*) FROM events WHERE task_id = 'second' AND type = 'task.status'"
                                " AND data LIKE '%\"merged\"%'")
    assert merged_events == [(1,)]


def test_an_internal_error_ends_the_attempt_and_the_retry_goes_on(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    """A bug inside one attempt (here: its record cannot be written) is that attempt's failure, not the run's."""
    records = MemoryStore()
    records.fail_on("add_attempt")
    plan = write_plan(plan_text(task("t", "@write t.txt t", "    retries: 1\n")))
    result = asyncio.run(asyncio.wait_for(orchard.run_async(plan, repo=repo, records=records), 30))
    assert result.status is RunStatus.COMPLETED, result.summary
    finished = [e for _, e in records.events(result.run_id) if e["type"] == "attempt.finished"]
    assert [e["outcome"] for e in finished] == [Outcome.SETUP_FAILED, Outcome.SUCCESS]
    assert finished[0]["detail"] == "internal error: add_attempt failed (injected)"
    assert [a.number for a in records.attempts(result.run_id)] == [2]  # the first never got its record


def test_a_journal_rolled_back_past_merges_learns_them_from_git_and_runs_none_again(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    """What a power loss can leave: the WAL's last transactions gone, so the journal shows tasks running that git
    shows merged. Resume trusts git's `Orchard-Task` trailers: nothing merged runs again or is reported failed."""
    signals = Path(RENDEZVOUS) / tmp_path.name
    signals.mkdir()
    started = "@append {sig}/starts-{id} started\n@wait-for {sig}/{go}\n@write {id}.txt {id}"
    tasks = (task("a", started.format(sig=signals, id="a", go="go"))
             + task("b", started.format(sig=signals, id="b", go="go"))
             + task("c", started.format(sig=signals, id="c", go="go2"), "    depends_on: [a, b]\n"))
    proc = subprocess.Popen([PYTHON, "-m", "orchard", "run", str(write_plan(plan_text(tasks))), "--json"], cwd=repo,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db, snapshot = repo / ".orchard" / "state.db", tmp_path / "before.db"
    try:
        wait_for(lambda: all((signals / f"starts-{t}").exists() for t in "ab"), "a and b are running", 60)
        with sqlite3.connect(db) as live, sqlite3.connect(snapshot) as copy:
            live.backup(copy)  # the journal as it was before either merged
        (signals / "go").touch()
        wait_for(lambda: (signals / "starts-c").exists(), "c started, so a and b merged", 60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_id = str(query(repo, "SELECT id FROM runs")[0][0])
    merged_before = {t: merges_of(own_git(repo), run_id, t) for t in "ab"}  # the user's copy lags up to 1 s
    assert all(len(commits) == 1 for commits in merged_before.values()), merged_before
    for leftover in (db, db.with_name("state.db-wal"), db.with_name("state.db-shm")):
        leftover.unlink(missing_ok=True)
    snapshot.rename(db)
    assert {s for (s,) in query(repo, "SELECT status FROM tasks WHERE task_id IN ('a', 'b')")} == {"running"}

    (signals / "go2").touch()
    resumed = run_orchard("resume", "--json", cwd=repo)
    assert resumed.code == 0, resumed.err
    assert {t: merges_of(own_git(repo), run_id, t) for t in "ab"} == merged_before  # not merged a second time
    assert [(signals / f"starts-{t}").read_text().count("started") for t in "abc"] == [1, 1, 2]  # c ran again
    assert query(repo, "SELECT task_id, status FROM tasks ORDER BY task_id") == [
        ("a", "merged"), ("b", "merged"), ("c", "merged")]
    recovered = [e["task"] for e in resumed.ndjson()
                 if e["type"] == "task.status" and e.get("reason") == "merged before the last session stopped"]
    assert sorted(recovered) == ["a", "b"]
    assert not [e for e in resumed.ndjson() if e["type"] == "attempt.started" and e["task"] != "c"]
