"""`compat: workstreams`: the workstream guide's `.state/orchestration.db` and `logs/orchestrator.log`, checked by
running the guide's own monitoring commands, exactly as it writes them, in the user's repository (real git, real
runs, scripted command agents)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import orchard
from orchard.core.events import OrchardEvent
from tests.conftest import RENDEZVOUS, agent_block, git, run_orchard, wait_for
from tests.test_engine_acceptance import plan_text, task

# the guide's monitoring commands, verbatim
BY_START = ('sqlite3 .state/orchestration.db "SELECT workstream_id, status, started_at FROM workstream_status '
            'ORDER BY started_at"')
COMPLETED = "sqlite3 .state/orchestration.db \"SELECT COUNT(*) FROM workstream_status WHERE status='completed'\""
RECENT = 'sqlite3 .state/orchestration.db "SELECT * FROM execution_log ORDER BY timestamp DESC LIMIT 10"'
TAIL = "tail -n 20 logs/orchestrator.log"
GREP = "grep ws-01 logs/orchestrator.log"

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[(INFO|WARNING|ERROR)\] (.*)$")
EXCLUDES = ["/.state/", "/logs/orchestrator.log"]


def user_command(repo: Path, command: str) -> str:
    """The user's command line, run by bash in the repository as they would type it; its output."""
    if shutil.which("sqlite3") is None:
        pytest.fail("install sqlite3: apt-get install sqlite3")
    proc = subprocess.run(["bash", "-c", command], cwd=repo, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, f"{command}: exit {proc.returncode}: {proc.stderr}"
    return proc.stdout


def rows(output: str) -> list[list[str]]:
    """`sqlite3`'s default output: one row a line, columns split by `|`."""
    return [line.split("|") for line in output.splitlines()]


def log_lines(output: str) -> list[tuple[str, str]]:
    """(level, message) of each log line; every line must have the documented format."""
    found = []
    for line in output.splitlines():
        match = LINE.match(line)
        assert match, f"not a log line: {line!r}"
        found.append((match[1], match[2]))
    return found


def workstreams(root: Path, prompts: dict[str, str], *, extra: dict[str, dict[str, object]] | None = None,
                parallel: int = 3) -> Path:
    """A workstreams directory (outside the repository): one JSON file per workstream, agent `agent-1`."""
    ws = root / "workstreams"
    ws.mkdir()
    (ws / "orchard.yaml").write_text(f"parallel: {parallel}\ndefaults: {{agent: agent-1, retries: 0}}\nagents:\n"
                                     + agent_block("agent-1"))
    for wid, prompt in prompts.items():
        (ws / f"{wid}.json").write_text(json.dumps({"id": wid, "prompt": prompt, **(extra or {}).get(wid, {})}))
    return ws


def excluded(repo: Path) -> list[str]:
    return [line for line in (repo / ".git" / "info" / "exclude").read_text().splitlines() if line in EXCLUDES]


def run_id(repo: Path) -> str:
    return user_command(repo, 'sqlite3 .state/orchestration.db "SELECT run_id FROM orchard_run"').strip()


def test_the_guides_commands_show_a_runs_workstreams(repo: Path, tmp_path: Path) -> None:
    ws = workstreams(tmp_path, {"ws-01": "@write a.txt a", "ws-02": "@if-attempt 1 @exit 3\n@write b.txt b",
                                "ws-03": "@exit 4"}, extra={"ws-02": {"retries": 1}})
    result = run_orchard("run", str(ws), cwd=repo)
    assert result.code == 1, result.err  # ws-03 failed

    by_start = rows(user_command(repo, BY_START))
    assert sorted(r[0] for r in by_start) == ["ws-01", "ws-02", "ws-03"]
    assert {r[0]: r[1] for r in by_start} == {"ws-01": "completed", "ws-02": "completed", "ws-03": "failed"}
    assert all(re.fullmatch(ISO, r[2]) for r in by_start), by_start
    assert [r[2] for r in by_start] == sorted(r[2] for r in by_start)
    assert user_command(repo, COMPLETED) == "2\n"
    failed = user_command(repo, "sqlite3 .state/orchestration.db \"SELECT status, exit_code, attempt, error_message "
                                "FROM workstream_status WHERE workstream_id='ws-03'\"")
    assert failed.startswith("failed|4|1|agent_error: exited with code 4"), failed
    assert user_command(repo, "sqlite3 .state/orchestration.db \"SELECT attempt, agent_id FROM workstream_status "
                              "WHERE workstream_id='ws-02'\"") == "2|agent-1\n"

    recent = rows(user_command(repo, RECENT))
    assert all(len(r) == 6 and re.fullmatch(ISO, r[1]) and r[3] == "agent-1" for r in recent), recent
    assert [r[1] for r in recent] == sorted((r[1] for r in recent), reverse=True)
    kinds = {(r[2], r[4]) for r in recent}
    assert kinds == {("ws-01", "started"), ("ws-01", "completed"), ("ws-02", "started"), ("ws-02", "retry"),
                     ("ws-02", "completed"), ("ws-03", "started"), ("ws-03", "failed")}
    said = {(r[2], r[4]): r[5] for r in recent}
    assert said["ws-03", "failed"] == "failed: agent_error: exited with code 4: exiting with 4"
    assert said["ws-02", "retry"].startswith("retry after agent_error: exited with code 3")

    tail = log_lines(user_command(repo, TAIL))
    assert len(tail) == min(20, len((repo / "logs" / "orchestrator.log").read_text().splitlines()))
    assert tail[-1] == ("ERROR", f"run {run_id(repo)} failed")
    assert ("ERROR", "ws-03: failed: agent_error: exited with code 4: exiting with 4") in tail
    assert ("INFO", "ws-02: completed (attempt 2)") in tail

    grep = log_lines(user_command(repo, GREP))
    assert all(text.startswith("ws-01: ") for _, text in grep)
    assert ("INFO", "ws-01: started on agent-1 (attempt 1)") in grep
    assert grep[-1] == ("INFO", "ws-01: completed (attempt 1)")
    assert not [text for level, text in grep if level != "INFO"]

    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert excluded(repo) == EXCLUDES


def test_the_database_is_readable_while_the_run_writes_it_and_a_resume_goes_on_with_it(
        repo: Path, tmp_path: Path, background: Callable[..., subprocess.Popen[str]]) -> None:
    marks = RENDEZVOUS / uuid.uuid4().hex
    ws = workstreams(tmp_path, {"ws-01": f"@touch {marks}/started\n@wait-for {marks}/go\n@write a.txt a",
                                "ws-02": "@write b.txt b"})
    proc = background("run", str(ws))
    wait_for(lambda: (marks / "started").exists(), "ws-01's agent started")
    wait_for(lambda: ["ws-02", "completed"] in [r[:2] for r in rows(user_command(repo, BY_START))],
             "ws-02 completed, read by sqlite3 while the run goes on")
    assert ["ws-01", "running"] in [r[:2] for r in rows(user_command(repo, BY_START))]
    assert user_command(repo, COMPLETED) == "1\n"
    assert ("INFO", "ws-01: started on agent-1 (attempt 1)") in log_lines(user_command(repo, TAIL))
    assert user_command(repo, 'sqlite3 .state/orchestration.db "PRAGMA journal_mode"') == "wal\n"
    assert proc.poll() is None, "the run is live"

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, proc.communicate()
    (marks / "go").touch()
    first = user_command(repo, RECENT)
    resumed = run_orchard("resume", cwd=repo)
    assert resumed.code == 0, resumed.err

    assert user_command(repo, COMPLETED) == "2\n"
    kept = rows(user_command(repo, "sqlite3 .state/orchestration.db \"SELECT id, event_type FROM execution_log "
                                   "WHERE workstream_id='ws-01' ORDER BY id\""))
    assert [kind for _, kind in kept] == ["started", "retry", "started", "completed"]
    assert all(line in user_command(repo, "sqlite3 .state/orchestration.db \"SELECT * FROM execution_log\"")
               for line in first.splitlines())  # the first session's entries stay
    grep = log_lines(user_command(repo, GREP))
    assert [text for _, text in grep if "started on" in text] == ["ws-01: started on agent-1 (attempt 1)",
                                                                  "ws-01: started on agent-1 (attempt 2)"]
    runs = [text for _, text in log_lines(user_command(repo, "grep -h '] run ' logs/orchestrator.log"))]
    assert any(" started: 2 tasks" in t for t in runs) and any(" resumed: 2 tasks" in t for t in runs), runs
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_yaml_plan_keeps_the_files_only_when_it_says_compat_workstreams(
        repo: Path, tmp_path: Path, write_plan: Callable[..., Path]) -> None:
    plain = write_plan(plan_text(task("solo", "@write s.txt s")))
    assert orchard.run(plain, repo=repo).exit_code == 0
    assert not (repo / ".state").exists() and not (repo / "logs").exists()
    assert excluded(repo) == []

    ws = workstreams(tmp_path, {"ws-01": "@write a.txt a", "ws-02": "@write b.txt b"})
    assert orchard.run(ws, repo=repo).exit_code == 0
    assert user_command(repo, COMPLETED) == "2\n"
    compat = write_plan("compat: workstreams\n" + plan_text(task("solo", "@write t.txt t")), "compat.yaml")
    assert orchard.run(compat, repo=repo).exit_code == 0
    # a new run replaces the rows; the log goes on
    assert [r[:2] for r in rows(user_command(repo, BY_START))] == [["solo", "completed"]]
    assert {r[2] for r in rows(user_command(repo, RECENT))} == {"solo"}
    log = log_lines(user_command(repo, "cat logs/orchestrator.log"))
    assert ("INFO", "ws-01: completed (attempt 1)") in log and ("INFO", "solo: completed (attempt 1)") in log
    assert excluded(repo) == EXCLUDES  # added once
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_log_file_moves_the_log(repo: Path, tmp_path: Path) -> None:
    ws = workstreams(tmp_path, {"ws-01": "@write a.txt a"})
    result = run_orchard("run", str(ws), "--log-file", "build/orchard run.log", cwd=repo)
    assert result.code == 0, result.err
    assert not (repo / "logs").exists()
    moved = log_lines(user_command(repo, "grep ws-01 'build/orchard run.log'"))
    assert ("INFO", "ws-01: completed (attempt 1)") in moved
    assert user_command(repo, COMPLETED) == "1\n"
    assert "/build/orchard\\ run.log" in (repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_files_that_cannot_be_written_never_stop_the_run(repo: Path, tmp_path: Path) -> None:
    (repo / ".state").write_text("in the way\n")
    ws = workstreams(tmp_path, {"ws-01": "@write a.txt a"})
    result = run_orchard("run", str(ws), cwd=repo)
    assert result.code == 0, result.err
    assert result.err.count("compat: workstreams: stopped writing") == 1, result.err
    assert not (repo / "logs").exists()


def test_a_locked_database_turns_the_files_off_and_the_run_goes_on(
        repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ws = workstreams(tmp_path, {"ws-01": "@write a.txt a", "ws-02": "@write b.txt b"}, parallel=1)
    locks: list[sqlite3.Connection] = []

    def lock_on_first_start(event: OrchardEvent) -> None:  # a user's sqlite3 that holds the write lock
        if event.type == "attempt.started" and not locks:
            conn = sqlite3.connect(repo / ".state" / "orchestration.db", isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            locks.append(conn)

    try:
        result = orchard.run(ws, repo=repo, on_event=lock_on_first_start)
    finally:
        for conn in locks:
            conn.close()
    assert result.exit_code == 0
    warnings = [r.getMessage() for r in caplog.records if "stopped writing" in r.getMessage()]
    assert len(warnings) == 1 and "database is locked" in warnings[0], warnings
    log = log_lines((repo / "logs" / "orchestrator.log").read_text())
    assert not any("completed" in text for _, text in log)  # off from the lock on
    assert user_command(repo, COMPLETED) == "0\n"


def test_compat_none_turns_the_files_of_a_workstreams_directory_off(repo: Path, tmp_path: Path) -> None:
    ws = workstreams(tmp_path, {"ws-01": "@write a.txt a"})
    (ws / "orchard.yaml").write_text("compat: none\n" + (ws / "orchard.yaml").read_text())
    assert orchard.run(ws, repo=repo).exit_code == 0
    assert not (repo / ".state").exists() and not (repo / "logs").exists()
    assert excluded(repo) == []
