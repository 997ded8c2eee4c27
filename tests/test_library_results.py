"""The library's `RunResult` carries every task's result, typed (issue 14, item 9), through the public API."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

import orchard
from orchard.core.model import Outcome, RunStatus, TaskStatus
from orchard.store import Store
from tests.conftest import git
from tests.test_engine_acceptance import plan_text, task


def test_run_result_has_each_task_status_attempts_outcome_commit_cost_and_error(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    tasks = (task("ok", "@write ok.txt fine") + task("broken", "@print trying\n@exit 4")
             + task("child", "@write child.txt x", "    depends_on: [broken]\n"))
    result = orchard.run(write_plan(plan_text(tasks)), repo=repo)
    assert isinstance(result, orchard.RunResult) and result.status is RunStatus.FAILED
    assert [t.id for t in result.tasks] == ["ok", "broken", "child"]  # plan order

    ok, broken, child = (result.task(name) for name in ("ok", "broken", "child"))
    assert (ok.status, ok.attempts, ok.outcome, ok.error, ok.merged) == (TaskStatus.MERGED, 1, Outcome.SUCCESS, "",
                                                                          True)
    assert ok.merged_commit is not None and re.fullmatch(r"[0-9a-f]{40}", ok.merged_commit)
    git(repo, "merge-base", "--is-ancestor", ok.merged_commit, f"orchard/{result.run_id}/integration")
    assert ok.duration_s > 0 and ok.cost_usd == 0.0 and ok.agent == "fake"

    assert (broken.status, broken.outcome, broken.merged_commit) == (TaskStatus.FAILED, Outcome.AGENT_ERROR, None)
    assert broken.attempts == 1 and "exited with code 4" in broken.error
    assert (child.status, child.attempts, child.outcome) == (TaskStatus.BLOCKED, 0, None)
    assert "broken" in child.error and child.duration_s == 0.0
    assert [t.id for t in result.failed] == ["broken", "child"]
    assert result.landed == ""  # not asked to land
    with pytest.raises(KeyError, match="nope"):
        result.task("nope")

    store = Store(repo / ".orchard" / "state.db")  # the same figures as the records
    try:
        assert ok.merged_commit == store.task(result.run_id, "ok").merged_commit
    finally:
        store.close()


def test_run_result_says_what_landing_did(repo: Path, write_plan: Callable[[str], Path]) -> None:
    result = orchard.run(write_plan(plan_text(task("one", "@write one.txt 1"))), repo=repo, land=True)
    assert result.status is RunStatus.COMPLETED
    assert result.landed.startswith(f"landed orchard/{result.run_id}/integration on main")
    assert git(repo, "show", "main:one.txt") == "1"
