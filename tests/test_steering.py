"""Steering a live run through the store: `orchard cancel TASK`, `orchard set`, `orchard agents [add]`, and the
backoff after transient failures; real git, real child processes, the real CLI in another process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAKE_AGENT, PYTHON, RENDEZVOUS, Result, query, wait_for
from tests.test_engine_acceptance import journal, plan_text, task

Start = Callable[..., "subprocess.Popen[str]"]


def run_id_of(repo: Path) -> str:
    return str(query(repo, "SELECT id FROM runs ORDER BY started_at DESC LIMIT 1")[0][0])


def applied(repo: Path, request: int | None = None) -> list[dict[str, Any]]:
    return [e for e in journal(repo) if e["type"] == "control.applied" and request in (None, e["request"])]


def attempts(repo: Path) -> dict[str, list[tuple[float, float | None, int | None]]]:
    rows = query(repo, "SELECT task_id, started_at, finished_at, pgid FROM attempts ORDER BY id")
    found: dict[str, list[tuple[float, float | None, int | None]]] = {}
    for task_id, started, finished, pgid in rows:
        found.setdefault(task_id, []).append((started, finished, pgid))
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> int:
    proc.communicate(timeout=timeout)
    return proc.returncode


@pytest.fixture
def rendezvous(tmp_path: Path) -> Path:
    """A directory the sandboxed fake agents may write and wait in."""
    folder = RENDEZVOUS / tmp_path.name
    folder.mkdir()
    return folder


def test_cancel_one_running_task_stops_its_group_blocks_dependents_and_the_rest_merges(
        repo: Path, write_plan: Callable[[str], Path], background: Start, orchard: Callable[..., Result],
        rendezvous: Path) -> None:
    go = rendezvous / "go"
    tasks = task("doomed", f"@touch {rendezvous}/doomed\n@sleep 120\n@write d.txt d")
    tasks += "".join(task(t, f"@touch {rendezvous}/{t}\n@wait-for {go}\n@write {t}.txt {t}") for t in ("b", "c"))
    tasks += task("after", "@write after.txt a", "    depends_on: [doomed]\n")
    proc = background("run", str(write_plan(plan_text(tasks, parallel=3))), "--json")
    wait_for(lambda: all((rendezvous / t).exists() for t in ("doomed", "b", "c")), "three agents running")
    pgid = attempts(repo)["doomed"][0][2]
    assert pgid is not None and group_alive(pgid)
    said = orchard("cancel", "doomed")
    assert said.code == 0 and "to cancel doomed" in said.out, said.err
    wait_for(lambda: not group_alive(pgid), "the cancelled agent's process group gone", timeout=8)  # grace 5 s
    wait_for(lambda: bool(query(repo, "SELECT 1 FROM tasks WHERE task_id = 'doomed' AND status = 'cancelled'")),
             "doomed cancelled")
    go.touch()
    assert finish(proc) == 1
    status = {t["id"]: t for t in orchard("status", "--json").json()["tasks"]}
    assert {t: status[t]["status"] for t in status} == {"doomed": "cancelled", "b": "merged", "c": "merged",
                                                       "after": "blocked"}
    assert "dependency 'doomed'" in status["after"]["error"]
    outcome = query(repo, "SELECT outcome FROM attempts WHERE task_id = 'doomed'")
    assert outcome == [("cancelled",)] and "after" not in attempts(repo)
    assert [e["result"] for e in applied(repo)] == ["doomed: stopping its attempt"]


def test_set_parallel_lowers_new_starts_while_the_running_finish_and_raises_again(
        repo: Path, write_plan: Callable[[str], Path], background: Start, orchard: Callable[..., Result],
        rendezvous: Path) -> None:
    first = "".join(task(f"t{i}", f"@touch {rendezvous}/t{i}\n@wait-for {rendezvous}/release\n@write t{i}.txt x")
                    for i in range(3))
    late = "".join(task(f"u{i}", f"@touch {rendezvous}/u{i}\n@wait-for {rendezvous}/late\n@write u{i}.txt x",
                        "    depends_on: [t0, t1, t2]\n") for i in range(3))
    proc = background("run", str(write_plan(plan_text(first + late, parallel=3))), "--json")
    wait_for(lambda: all((rendezvous / f"t{i}").exists() for i in range(3)), "three running")
    assert orchard("set", "parallel=1").code == 0
    wait_for(lambda: bool(applied(repo)), "the new limit applied")
    assert query(repo, "SELECT parallel FROM runs") == [(1,)]
    (rendezvous / "release").touch()
    wait_for(lambda: (rendezvous / "u0").exists(), "the first late task running")
    assert len(attempts(repo)) == 4  # u0 only: the limit holds u1 and u2 back
    assert orchard("set", "parallel=4").code == 0
    wait_for(lambda: all((rendezvous / f"u{i}").exists() for i in range(3)), "the raised limit starts the rest")
    (rendezvous / "late").touch()
    assert finish(proc) == 0
    spans = {t: a[0] for t, a in attempts(repo).items()}
    lowered, raised = (ts for (ts,) in query(repo, "SELECT ts FROM events WHERE type = 'control.applied' ORDER BY id"))
    assert all(spans[f"t{i}"][0] < lowered < (spans[f"t{i}"][1] or 0.0) for i in range(3))  # ran on, not stopped
    assert min(spans[f"u{i}"][0] for i in (1, 2)) > raised  # parallel 1 held them back until parallel 4
    assert max(spans[f"u{i}"][0] for i in (1, 2)) < (spans["u0"][1] or 0.0)  # then beside u0
    changes = [e["result"] for e in applied(repo)]
    assert changes == ["parallel=1", "parallel=4"]


def test_crashes_back_off_doubling_and_a_permanent_failure_is_not_retried(
        repo: Path, write_plan: Callable[[str], Path], orchard: Callable[..., Result]) -> None:
    tasks = task("flaky", "@if-attempt 1 @segv\n@if-attempt 2 @segv\n@write flaky.txt ok",
                 "    retries: 2\n    retry_backoff: 1s\n")
    tasks += task("idle", "@print nothing to do", "    retries: 2\n")
    tasks += task("idle-ok", "@print nothing yet\n@if-attempt 2 @write idle.txt x",
                  "    retries: 2\n    retry_on: [no_changes]\n")
    ran = orchard("run", str(write_plan(plan_text(tasks))), "--json")
    assert ran.code == 1, ran.err
    spans = attempts(repo)
    assert len(spans["flaky"]) == 3 and len(spans["idle"]) == 1 and len(spans["idle-ok"]) == 2
    (_, e1, _), (s2, e2, _), (s3, _, _) = spans["flaky"]
    assert e1 is not None and e2 is not None
    assert s2 - e1 >= 0.8 and s3 - e2 >= 1.6  # 1 s, then 2 s, each ± 20 %
    paused = [e for e in journal(repo) if e["type"] == "task.status" and e["task"] == "flaky"
              and e["status"] == "paused"]
    assert len(paused) == 2 and all(e["until"] and "backing off" in str(e["reason"]) for e in paused)
    status = {t["id"]: t for t in orchard("status", "--json").json()["tasks"]}
    assert status["flaky"]["status"] == "merged" and status["idle-ok"]["status"] == "merged"
    assert status["idle"]["status"] == "failed"
    why = [e["reason"] for e in journal(repo) if e["type"] == "task.status" and e["task"] == "idle"
           and e["status"] == "failed"]
    assert why == ["no_changes (permanent: not retried unless the task's retry_on names it)"]


def test_requests_to_an_interrupted_run_apply_when_it_resumes(
        repo: Path, write_plan: Callable[[str], Path], background: Start, orchard: Callable[..., Result],
        rendezvous: Path) -> None:
    tasks = task("a", f"@touch {rendezvous}/a\n@wait-for {rendezvous}/never 120\n@write a.txt a")
    tasks += task("b", "@write b.txt b", "    depends_on: [a]\n") + task("c", "@write c.txt c",
                                                                         "    depends_on: [a]\n")
    proc = background("run", str(write_plan(plan_text(tasks, parallel=2))), "--json")
    wait_for(lambda: (rendezvous / "a").exists(), "a running")
    proc.send_signal(signal.SIGINT)
    assert finish(proc) == 130
    cancel = orchard("cancel", "b")
    assert cancel.code == 0 and "is not running" in cancel.out and "applies when it resumes" in cancel.out
    assert orchard("set", "parallel=1", "fake.max_parallel=1").code == 0
    (rendezvous / "never").touch()
    resumed = orchard("resume", "--json")
    assert resumed.code == 0, resumed.err  # cancelled is not failed
    status = {t["id"]: t["status"] for t in orchard("status", "--json").json()["tasks"]}
    assert status == {"a": "merged", "b": "cancelled", "c": "merged"}
    assert "b" not in attempts(repo) and query(repo, "SELECT parallel FROM runs") == [(1,)]
    assert [e["result"] for e in applied(repo)] == ["b: cancelled", "parallel=1; fake.max_parallel=1"]
    listed = orchard("agents", "--json").json()["agents"]
    assert [(a["name"], a["max_parallel"], a["state"]) for a in listed] == [("fake", 1, "stopped")]


def test_bad_requests_are_refused_naming_what_is_wrong(
        repo: Path, write_plan: Callable[[str], Path], orchard: Callable[..., Result]) -> None:
    assert orchard("run", str(write_plan(plan_text(task("a", "@exit 1"))))).code == 1  # failed: it can go on
    cases = {("set", "ghost.max_parallel=2"): "the run has no agent 'ghost' (its agents: fake)",
             ("set", "parallel=0"): "parallel=0",
             ("set", "fake.paused=maybe"): "fake.paused=maybe",
             ("set", "colour"): "expected KEY=VALUE",
             ("cancel", "nope"): "has no task 'nope'",
             ("agents", "add", "x", "--type", "comand"): "unknown agent type 'comand'",
             ("agents", "add", "fake", "--type", "command", "--option", "command=[run]"): "an agent named 'fake'",
             ("agents", "add", "y", "--type", "command", "--option", "env={K: v}"): "no place for secrets"}
    for args, message in cases.items():
        said = orchard(*args)
        assert said.code == 2 and message in said.err and "Traceback" not in said.err, (args, said.err)
    assert query(repo, "SELECT COUNT(*) FROM requests") == [(0,)]
    assert orchard("run", str(write_plan(plan_text(task("b", "@write b.txt b"))))).code == 0
    done = orchard("set", "parallel=2")
    assert done.code == 2 and "is completed: there is nothing left to steer" in done.err


def test_agents_add_gives_a_rate_limited_run_a_fallback_its_queued_tasks_run_on(
        repo: Path, tmp_path: Path, background: Start, orchard: Callable[..., Result]) -> None:
    """The run's only agent (the real claude CLI) is rate limited for ten minutes by the fake model server; a
    command agent added live, as the paused agent's fallback, takes every waiting task."""
    from orchard.testing import FakeModelServer, error
    from tests.test_real_agents_engine import agent_entry

    with FakeModelServer() as server:
        server.add_script("busy", [error(429, retry_after=600)])
        tasks = [{"id": t, "prompt": f"Write {t}.txt. [[script:busy]]\n@write {t}.txt {t}"} for t in ("x", "y", "z")]
        plan = {"parallel": 1, "defaults": {"agent": "ai", "retries": 0, "timeout": "2m"},
                "agents": {"ai": agent_entry("claude", server, tmp_path / "claude-home", rate_limit_backoff="10m")},
                "tasks": tasks}
        path = tmp_path / "plan.yaml"
        path.write_text(json.dumps(plan))
        proc = background("run", str(path), "--json")
        wait_for(lambda: len(query(repo, "SELECT 1 FROM tasks WHERE status = 'paused'")) == 3, "all paused",
                 timeout=60)
        listed = orchard("agents", "--json").json()["agents"]
        assert [(a["name"], a["paused"], a["state"]) for a in listed] == [("ai", 3, "waiting")]
        command = json.dumps([PYTHON, str(FAKE_AGENT), "{prompt_file}"])
        added = orchard("agents", "add", "helper", "--type", "command", "--option", f"command={command}",
                        "--fallback-for", "ai")
        assert added.code == 0, added.err
        assert finish(proc) == 0
    ran_on = query(repo, "SELECT task_id, agent, outcome FROM attempts ORDER BY id")
    assert ran_on[0][1:] == ("ai", "rate_limited")
    assert sorted((t, a) for t, a, o in ran_on[1:]) == [("x", "helper"), ("y", "helper"), ("z", "helper")]
    assert [e["result"] for e in applied(repo)] == ["added agent helper (command); ai falls back to helper"]


def test_events_output_carries_every_stdout_and_stderr_line_in_order_redacted_and_bounded(
        repo: Path, tmp_path: Path, orchard: Callable[..., Result]) -> None:
    script = tmp_path / "talk.py"
    script.write_text(
        "import os, sys\n"
        "for i in range(50):\n"
        "    print(f'out {i}', flush=True)\n"
        "    print(f'err {i}', file=sys.stderr, flush=True)\n"
        "print('token ' + os.environ['TALK_TOKEN'], flush=True)\n"
        "print('x' * 10000, flush=True)\n"
        "open('said.txt', 'w').write('done')\n")
    agents = (f'  fake: {{type: command, command: ["{PYTHON}", "{script}"], '
              'env: {TALK_TOKEN: "tok-5ecret-93f1"}}\n')
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text(task("t", "talk"), agents=agents))
    ran = orchard("run", str(plan), "--json", "--events", "output")
    assert ran.code == 0, ran.err
    lines = [e for e in ran.ndjson() if e["type"] == "agent.output"]
    by_stream = {s: [e["line"] for e in lines if e["stream"] == s] for s in ("stdout", "stderr")}
    assert by_stream["stderr"] == [f"err {i}" for i in range(50)]
    assert by_stream["stdout"][:50] == [f"out {i}" for i in range(50)]
    assert "tok-5ecret-93f1" not in ran.out and by_stream["stdout"][50].startswith("token ")
    assert by_stream["stdout"][51] == "x" * 4096 + " …[5904 more characters]"
    assert all(e["task"] == "t" and e["attempt"] == 1 for e in lines)
    quiet = orchard("run", str(plan), "--json")
    assert quiet.code == 0 and not [e for e in quiet.ndjson() if e["type"] == "agent.output"]
    assert query(repo, "SELECT COUNT(*) FROM events WHERE type = 'agent.output'") == [(0,)]  # never journaled
