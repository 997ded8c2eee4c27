"""`priority_mode: strict` end to end: at parallel 1 the urgent task starts first, whatever the critical path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import query, run_orchard
from tests.test_engine_acceptance import plan_text, task


@pytest.mark.parametrize(("mode", "first"), [("tiebreak", "long"), ("strict", "urgent")])
def test_the_urgent_task_starts_first_only_when_priority_is_strict(
        mode: str, first: str, repo: Path, write_plan: Callable[[str], Path]) -> None:
    tasks = (task("long", "@write long.txt l", "    estimate: 5m\n")
             + task("tail", "@write tail.txt t", "    estimate: 1h\n    depends_on: [long]\n")
             + task("urgent", "@write urgent.txt u", "    estimate: 5m\n    priority: 100\n"))
    plan = write_plan(f"priority_mode: {mode}\n" + plan_text(tasks, parallel=1))
    result = run_orchard("run", str(plan), cwd=repo)
    assert result.code == 0, result.out + result.err
    order = [t for (t,) in query(repo, "SELECT task_id FROM attempts ORDER BY started_at")]
    assert order[0] == first and sorted(order) == ["long", "tail", "urgent"]
