"""The estimated finish of a live run (issue 15, item 5): the rest simulated with the real scheduler from where the
run stands, with estimates scaled by what this run learned; shown by `status`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from orchard.core.eta import estimated_finish, learned_ratio
from orchard.core.model import AgentSpec, Outcome, Plan, Task, TaskStatus
from orchard.core.records import AttemptRecord, TaskRecord
from tests.conftest import Result, query
from tests.test_cli import plan_text, task
from tests.test_cli_manage import live_run

S = TaskStatus
NOW = 1000.0


def plan() -> Plan:
    tasks = [Task("a", "x", "fake", estimate_s=10.0), Task("b", "x", "fake", estimate_s=10.0),
             Task("c", "x", "fake", depends_on=("b",), estimate_s=10.0),
             Task("d", "x", "fake", depends_on=("gone",), estimate_s=10.0), Task("gone", "x", "fake")]
    return Plan.build(tasks, {"fake": AgentSpec("fake", "command")}, parallel=2)


def record(task_id: str, status: TaskStatus) -> TaskRecord:
    return TaskRecord(run_id="r", task_id=task_id, position=0, status=status, agent="fake")


def attempt(task_id: str, start: float, end: float | None, outcome: Outcome | None) -> AttemptRecord:
    return AttemptRecord(id=0, run_id="r", task_id=task_id, number=1, agent="fake", started_at=start, worktree="",
                         start_commit="", log_path="", finished_at=end, outcome=outcome)


def test_the_rest_of_the_run_is_simulated_from_where_it_stands_at_the_pace_it_has_shown() -> None:
    tasks = [record("a", S.MERGED), record("b", S.RUNNING), record("c", S.PENDING), record("d", S.BLOCKED),
             record("gone", S.FAILED)]
    attempts = [attempt("a", NOW - 30, NOW - 10, Outcome.SUCCESS),  # twice its estimate: the run is slow
                attempt("gone", NOW - 30, NOW - 25, Outcome.AGENT_ERROR),  # a failure teaches nothing of pace
                attempt("b", NOW - 5, None, None)]
    assert learned_ratio(plan(), attempts) == 2.0
    # b has 20 - 5 = 15 s left, then c takes 20 s; a, d and gone are done with
    assert estimated_finish(plan(), tasks, attempts, parallel=2, now=NOW) == NOW + 35.0


def test_nothing_left_has_no_estimate_and_the_pace_is_bounded() -> None:
    done = [record(t.id, S.MERGED) for t in plan().tasks]
    assert estimated_finish(plan(), done, [], parallel=2, now=NOW) is None
    assert learned_ratio(plan(), []) == 1.0
    wild = [attempt("a", NOW - 100_000, NOW, Outcome.SUCCESS)]
    assert learned_ratio(plan(), wild) == 20.0


def test_status_shows_when_a_live_run_should_end_and_nothing_once_it_ended(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    go = repo.parent / "go"
    plan = write_plan(plan_text(task("s", f"@wait-for {go} 60\n@write s.txt s", "    estimate: 1m\n")
                                + task("w", "@write w.txt w", "    depends_on: [s]\n    estimate: 2m\n")))
    with live_run(repo, plan) as (proc, _run_id, _pgid):
        started = time.time()
        doc = orchard("status", "--json").json()
        eta = datetime.fromisoformat(doc["run"]["eta"].replace("Z", "+00:00")).timestamp()
        # s has up to a minute left and w two more: about three minutes from its start, nothing learned yet
        assert started + 120 < eta < started + 185, (eta - started)
        assert "· eta " in orchard("status").out
        go.touch()
        proc.wait(timeout=60)
    assert orchard("status", "--json").json()["run"]["eta"] is None
    # the session's own queue.changed events carried the estimate, for its dashboard
    etas = [json.loads(row[0]).get("eta") for row in query(repo, "SELECT data FROM events WHERE type = ?",
                                                              "queue.changed")]
    assert any(etas), etas
