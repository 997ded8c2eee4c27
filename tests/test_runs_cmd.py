"""`orchard runs`: the repository's runs, newest first, with their status, merged counts and cost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orchard
from tests.conftest import run_orchard
from tests.test_engine_acceptance import plan_text, task


def test_runs_lists_every_run_newest_first_with_its_merged_count(
        repo: Path, tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    second_plan = tmp_path / "second.yaml"
    second_plan.write_text(plan_text(task("b", "@write b.txt b")))
    first = orchard.run(write_plan(plan_text(task("a", "@write a.txt a") + task("bad", "@exit 3"))), repo=repo)
    second = orchard.run(second_plan, repo=repo)
    assert (str(first.status), str(second.status)) == ("failed", "completed")
    listed = run_orchard("runs", "--json", cwd=repo)
    assert listed.code == 0, listed.err
    rows = listed.json()["runs"]
    assert [r["id"] for r in rows] == [second.run_id, first.run_id]
    assert [(r["status"], r["merged"], r["tasks"]) for r in rows] == [("completed", 1, 1), ("failed", 1, 2)]
    assert rows[0]["plan"].endswith("second.yaml") and rows[0]["started_at"].endswith("Z")
    text = run_orchard("runs", cwd=repo)
    assert text.code == 0 and f"{first.run_id}" in text.out and "merged 1/2" in text.out


def test_runs_where_nothing_ran_says_so(repo: Path) -> None:
    nothing = run_orchard("runs", cwd=repo)
    assert nothing.code != 0 and "Traceback" not in nothing.err and nothing.err.strip()
