"""Interrupts, timeouts and the agent's environment, end to end through the real CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import PYTHON, git, merged_tasks, query, run_orchard, wait_for
from tests.test_engine_acceptance import plan_text, slow_merges, task


def logged(repo: Path, task_id: str, attempt: int, text: str) -> bool:
    """True once orchard logged `text` from the attempt's output: the agent runs, and orchard knows its process
    (the pid is registered before the output is read)."""
    logs = (repo / ".orchard" / "runs").glob(f"*/logs/{task_id}.{attempt}.log")
    return any(text in log.read_text(errors="replace") for log in logs)


def noted(repo: Path, text: str) -> bool:
    """True once the run journaled a `run.note` containing `text`."""
    return any(text in str(message) for (message,) in query(repo, "SELECT message FROM events WHERE type = 'run.note'"))


def task_status(repo: Path, task_id: str) -> str | None:
    rows = query(repo, "SELECT status FROM tasks WHERE task_id = ? ORDER BY rowid DESC", task_id)
    return str(rows[0][0]) if rows else None


def test_ctrl_c_stops_gracefully_exits_130_and_resumes(repo: Path, write_plan: Callable[[str], Path],
                                                       background: Callable[..., subprocess.Popen[str]]) -> None:
    tasks = task("quick", "@write quick.txt q")
    tasks += task("slow", "@print working\n@if-attempt 1 @sleep 30\n@write slow.txt s")
    tasks += task("after", "@write after.txt a", "    depends_on: [slow]\n")
    plan = write_plan(plan_text(tasks))
    proc = background("run", str(plan))
    wait_for(lambda: task_status(repo, "quick") == "merged" and logged(repo, "slow", 1, "working"))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert "interrupted by SIGINT" in out and "orchard resume" in out and "Traceback" not in err
    doc = run_orchard("status", "--json", cwd=repo).json()
    assert doc["run"]["status"] == "interrupted"
    assert {t["id"]: t["status"] for t in doc["tasks"]} == {"quick": "merged", "slow": "queued", "after": "pending"}

    resumed = run_orchard("resume", "--json", cwd=repo, timeout=60)
    assert resumed.code == 0, resumed.err
    starts = [e["task"] for e in resumed.ndjson() if e["type"] == "attempt.started"]
    assert sorted(starts) == ["after", "slow"]  # the merged task never ran again
    slow = [e for e in resumed.ndjson() if e["type"] == "attempt.started" and e["task"] == "slow"]
    assert slow[0]["attempt"] == 2
    final = run_orchard("status", "--json", cwd=repo).json()
    assert final["run"]["status"] == "completed"
    assert {t["status"] for t in final["tasks"]} == {"merged"}
    assert next(t for t in final["tasks"] if t["id"] == "slow")["error"] is None


def test_task_timeout_kills_the_agent_and_fails_the_task(repo: Path, write_plan: Callable[[str], Path]) -> None:
    tasks = task("hang", "@print about to hang\n@sleep 60", "    timeout: 1s\n")
    started = time.monotonic()
    result = run_orchard("run", str(write_plan(plan_text(tasks))), "--json", cwd=repo)
    assert time.monotonic() - started < 30
    assert result.code == 1
    finished = [e for e in result.ndjson() if e["type"] == "attempt.finished"]
    assert finished[0]["outcome"] == "timeout" and finished[0]["signal"] in (signal.SIGTERM, signal.SIGKILL)
    hang = run_orchard("status", "--json", cwd=repo).json()["tasks"][0]
    assert hang["status"] == "failed" and hang["error"].startswith("timeout")


def test_agent_gets_orchard_environment_and_worktree_cwd(repo: Path, write_plan: Callable[[str], Path]) -> None:
    script = repo.parent / "env_agent.py"
    script.write_text(
        "import json, os, pathlib\n"
        "keys = ['ORCHARD_RUN_ID', 'ORCHARD_TASK_ID', 'ORCHARD_ATTEMPT', 'ORCHARD_PROMPT_FILE', 'ORCHARD_WORKTREE']\n"
        "data = {k: os.environ.get(k) for k in keys}\n"
        "data['cwd'] = os.getcwd()\n"
        "data['prompt'] = pathlib.Path(os.environ['ORCHARD_PROMPT_FILE']).read_text()\n"
        "pathlib.Path('env.json').write_text(json.dumps(data))\n")
    agents = f'  fake: {{type: command, command: ["{PYTHON}", "{script}"]}}\n'
    plan = write_plan(plan_text(task("e", "report the environment"), agents=agents))
    result = run_orchard("run", str(plan), cwd=repo)
    assert result.code == 0, result.err
    run_id = run_orchard("status", "--json", cwd=repo).json()["run"]["id"]
    data = json.loads(git(repo, "show", f"orchard/{run_id}/integration:env.json"))
    assert data["ORCHARD_RUN_ID"] == run_id and data["ORCHARD_TASK_ID"] == "e" and data["ORCHARD_ATTEMPT"] == "1"
    # the worktree's one path for life (`runtime.pool`); the task's link `.orchard/worktrees/<run>/e` led there
    assert data["cwd"] == data["ORCHARD_WORKTREE"] and Path(data["cwd"]).parent == (repo / ".orchard" / "pool")
    assert query(repo, "SELECT worktree FROM attempts") == [(data["cwd"],)]
    assert data["prompt"].startswith("report the environment")
    assert ".orchard/runs/" in data["ORCHARD_PROMPT_FILE"]  # outside the worktree: never committed


def test_second_signal_kills_at_once_and_the_run_stays_resumable(
        repo: Path, write_plan: Callable[[str], Path], background: Callable[..., subprocess.Popen[str]]) -> None:
    tasks = task("stubborn", "@ignore-term\n@print ignoring you\n@if-attempt 1 @sleep 60\n@write s.txt s")
    proc = background("run", str(write_plan(plan_text(tasks))))
    wait_for(lambda: logged(repo, "stubborn", 1, "ignoring you"))  # printed once its SIGTERM handler is in place
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: noted(repo, "interrupted by SIGTERM"))  # the run took the signal and passed it on to the agent
    # The agent ignores SIGTERM and a graceful stop waits for it (for the grace period). That the run did not end
    # is a negative, so it takes a while to see; load only makes an early end less likely, so this cannot fail on a
    # slow machine.
    watch_until = time.monotonic() + 0.5
    while time.monotonic() < watch_until:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and time.monotonic() - started < 10, err
    assert "killing agents" in out
    resumed = run_orchard("resume", cwd=repo, timeout=60)
    assert resumed.code == 0, resumed.err


def test_a_graceful_stop_kills_an_agent_that_ignores_its_sigterm_after_the_grace_period(
        repo: Path, write_plan: Callable[[str], Path], background: Callable[..., subprocess.Popen[str]]) -> None:
    """The TERM of a first Ctrl-C can be lost (an agent ignores it, or it came while bwrap's `env` still ignored
    it): the stop then kills the agent when the grace period is over instead of waiting for it to end on its own."""
    tasks = task("stubborn", "@ignore-term\n@print ignoring you\n@if-attempt 1 @sleep 60\n@write s.txt s")
    proc = background("run", str(write_plan(plan_text(tasks))))
    wait_for(lambda: logged(repo, "stubborn", 1, "ignoring you"))
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=40)
    assert proc.returncode == 130 and time.monotonic() - began < 30, (out, err)
    assert "killing agents" not in out  # one signal: the graceful stop did it
    (code, sig), = query(repo, "SELECT exit_code, signal FROM attempts WHERE task_id = 'stubborn'")
    assert code is None and sig == signal.SIGKILL
    assert task_status(repo, "stubborn") == "queued"  # interrupted, not failed: resume runs it again


def test_a_second_signal_kills_a_merge_in_flight_and_resume_merges_it_once(
        repo: Path, write_plan: Callable[[str], Path], background: Callable[..., subprocess.Popen[str]],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git calls are killed by a hard stop like agents are; a killed merge is neither a failure nor lost."""
    started = tmp_path / "merge-started"
    monkeypatch.setenv("PATH", slow_merges(tmp_path, 60, started))  # the merge hangs until it is killed
    proc = background("run", str(write_plan(plan_text(task("m", "@write m.txt m")))))
    wait_for(started.exists)  # the merge queue's git is running
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: noted(repo, "interrupted by SIGTERM"))  # a graceful stop waits for the merge
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - began < 10, (out, err)
    assert task_status(repo, "m") == "merging"  # no verdict on the result: not failed, not a conflict
    assert noted(repo, "the merge of m was stopped")
    monkeypatch.undo()
    resumed = run_orchard("resume", "--json", cwd=repo, timeout=60)
    assert resumed.code == 0, resumed.err
    assert not [e for e in resumed.ndjson() if e["type"] == "attempt.started"]  # its result was kept
    run_id = str(query(repo, "SELECT id FROM runs")[0][0])
    assert [task for _, task in merged_tasks(repo, f"orchard/{run_id}/integration")] == ["m"]


def test_queue_changed_events_follow_the_task_statuses_journaled_before_them(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    tasks = "".join(task(f"t{i}", f"@write t{i}.txt {i}") for i in range(5))
    tasks += task("after", "@write after.txt a", "    depends_on: [t0, t1]\n")
    result = run_orchard("run", str(write_plan(plan_text(tasks, parallel=2))), "--json", cwd=repo)
    assert result.code == 0, result.err
    status: dict[str, str] = {}
    seen = []
    for event in result.ndjson():
        if event["type"] == "task.status":
            status[event["task"]] = event["status"]
        elif event["type"] == "queue.changed":
            running = sum(s in ("running", "verifying") for s in status.values())
            assert (event["waiting"], event["running"], event["free"], event["paused"]) == (
                sum(s == "queued" for s in status.values()), running, 2 - running, 0), (event, status)
            seen.append((event["waiting"], event["running"]))
    assert len(seen) >= 2 and seen[-1] == (0, 0)  # it moved, and the last says the queue is empty
    plain = run_orchard("run", str(write_plan(plan_text(task("x", "@write x.txt x")))), cwd=repo)
    assert plain.code == 0 and "queue: waiting" not in plain.out  # not in the plain lines: the statuses say it
