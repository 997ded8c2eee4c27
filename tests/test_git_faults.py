"""Faults of git itself, not of an agent: lock files a killed git left behind, and merges that fail for a reason
other than a conflict. Neither may make an agent run again, and neither is reported as a conflict."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PYTHON, RENDEZVOUS, git, merged_tasks, own_git, query, run_orchard, wait_for
from tests.test_engine_acceptance import plan_text, task


def _gated(signals: Path, task_id: str, gate: str) -> str:
    """A task's prompt that records each start of its agent, then waits for `gate` before doing its work."""
    return f"@append {signals}/starts-{task_id} started\n@wait-for {signals}/{gate}\n@write {task_id}.txt {task_id}"


def _starts(signals: Path, task_id: str) -> int:
    path = signals / f"starts-{task_id}"
    return path.read_text().count("started") if path.exists() else 0


def test_locks_a_killed_session_left_in_orchards_repository_are_removed_on_resume(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    signals = RENDEZVOUS / tmp_path.name
    signals.mkdir()
    tasks = task("a", _gated(signals, "a", "go-a")) + task("b", _gated(signals, "b", "go-b"), "    retries: 2\n")
    proc = subprocess.Popen([PYTHON, "-m", "orchard", "run", str(write_plan(plan_text(tasks))), "--json"], cwd=repo,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _starts(signals, "a") == 1 and _starts(signals, "b") == 1, "both agents started", 60)
        (signals / "go-a").touch()
        wait_for(lambda: query(repo, "SELECT status FROM tasks WHERE task_id = 'a'") == [("merged",)], "a merged")
    finally:
        proc.send_signal(signal.SIGKILL)  # b's agent is still waiting for its gate
        proc.wait()
    run_id = str(query(repo, "SELECT id FROM runs")[0][0])
    # what a git killed mid-update leaves: a lock on the integration ref, on the packed refs, on a worktree's index
    planted = [own_git(repo) / "refs" / "heads" / "orchard" / run_id / "integration.lock",
               own_git(repo) / "packed-refs.lock"]
    planted += [w / "index.lock" for w in (own_git(repo) / "worktrees").iterdir()]
    for lock in planted:
        lock.write_text("0" * 40 + "\n")

    (signals / "go-b").touch()
    resumed = run_orchard("resume", "--json", cwd=repo)
    assert resumed.code == 0, resumed.out[-2000:]
    assert not [lock for lock in planted if lock.exists()]
    notes = [e["text"] for e in resumed.ndjson() if e["type"] == "run.note"]
    assert any(f"removed {len(planted)} lock file(s)" in n and "integration.lock" in n for n in notes), notes
    integration = f"orchard/{run_id}/integration"
    assert sorted(t for _, t in merged_tasks(own_git(repo), integration)) == ["a", "b"]  # each merged once
    attempts = dict(query(repo, "SELECT task_id, count(*) FROM attempts GROUP BY task_id"))
    assert (_starts(signals, "a"), _starts(signals, "b")) == (attempts["a"], attempts["b"]) == (1, 2)
    assert query(repo, "SELECT count(*) FROM tasks WHERE status = 'conflict'") == [(0,)]


def test_a_merge_that_git_cannot_make_fails_the_task_as_a_git_error_without_running_its_agent_again(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    signals = RENDEZVOUS / tmp_path.name
    signals.mkdir()
    plan = write_plan(plan_text(task("a", _gated(signals, "a", "go"), "    retries: 3\n")))
    proc = subprocess.Popen([PYTHON, "-m", "orchard", "run", str(plan), "--json"], cwd=repo, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: _starts(signals, "a") == 1, "the agent started", 60)
    run_id = str(query(repo, "SELECT id FROM runs")[0][0])
    lock = own_git(repo) / "refs" / "heads" / "orchard" / run_id / "integration.lock"
    lock.write_text("held\n")  # held, as by a git that does not finish, for as long as the run goes on
    (signals / "go").touch()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert _starts(signals, "a") == 1  # three retries left, none used: the agent's work was fine
    [(status, error)] = query(repo, "SELECT status, error FROM tasks")
    assert status == "failed" and error.startswith("git error while merging") and "integration.lock" in error
    assert query(repo, "SELECT count(*) FROM attempts") == [(1,)]
    merges = [e for e in map(json.loads, out.splitlines()) if e["type"] == "merge.finished"]
    assert [m["result"] for m in merges] == ["error"]
    retried = [e for e in map(json.loads, out.splitlines())
               if e["type"] == "run.note" and "trying again" in e["text"]]
    assert len(retried) == 2  # the lock could have been a git finishing its update: the merge was tried 3 times
    assert git(own_git(repo), "rev-parse", f"orchard/{run_id}/task/a")  # the result is kept for a later retry


def test_a_lock_in_the_users_repository_is_reported_with_how_to_remove_it_and_left_alone(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    lock = repo / ".git" / "packed-refs.lock"
    lock.write_text("")
    result = run_orchard("run", str(write_plan(plan_text(task("a", "@write a.txt a")))), "--json", cwd=repo)
    assert result.code == 0, result.out[-2000:]
    notes = [e["text"] for e in result.ndjson() if e["type"] == "run.note"]
    assert any(f"rm -- '{lock}'" in n for n in notes), notes
    assert lock.exists()  # a git of the user's may hold it: not orchard's to remove
