"""Figures that stay right across sessions: a task's time is its attempts' time, a dead session's figures stand
still, and the run's wall time adds up its sessions and says so (issue 14, item 5)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Result, query
from tests.test_cli import assert_clean_exit, plan_text, task
from tests.test_cli_manage import live_run


def tasks_of(orchard: Callable[..., Result]) -> dict[str, dict[str, Any]]:
    result = orchard("status", "--json")
    assert_clean_exit(result, 0)
    return {t["id"]: t for t in result.json()["tasks"]}


def test_a_task_time_is_its_attempts_time_and_stands_still_while_nothing_runs(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    go = repo.parent / "go"
    plan = write_plan(plan_text(task("first", "@write first.txt f") + task(
        "s", f"@wait-for {go} 60\n@write s.txt s", extra="    depends_on: [first]\n")))
    with live_run(repo, plan) as (proc, run_id, _pgid):
        proc.send_signal(signal.SIGKILL)  # a crash: the store still says running, with s's attempt open
        proc.wait(timeout=10)
    before = tasks_of(orchard)["s"]["duration_s"]
    time.sleep(1.5)  # the gap between sessions is the subject here: nothing runs in it
    assert tasks_of(orchard)["s"]["duration_s"] == before, "a dead session's task time grew with the clock"

    go.touch()
    resumed = orchard("resume")
    assert_clean_exit(resumed, 0)
    s = tasks_of(orchard)["s"]
    spans = [f - st for st, f in query(repo, "SELECT started_at, finished_at FROM attempts WHERE task_id = 's' "
                                             f"AND run_id = '{run_id}' ORDER BY number")]
    assert len(spans) == 2 and s["status"] == "merged"
    assert abs(s["duration_s"] - sum(spans)) < 0.01
    first_start = query(repo, f"SELECT started_at FROM attempts WHERE task_id = 's' AND run_id = '{run_id}'")[0][0]
    last_end = query(repo, f"SELECT finished_at FROM tasks WHERE task_id = 's' AND run_id = '{run_id}'")[0][0]
    assert s["duration_s"] < last_end - first_start - 1.0  # the 1.5 s between sessions is not in it

    # the summary's wall time adds up the two sessions and says that the time between them is not counted
    assert "in 2 sessions (time between them not counted)" in resumed.out
    status = orchard("status")
    assert "in 2 sessions" in status.out
