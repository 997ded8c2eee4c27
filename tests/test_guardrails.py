"""Guardrails on results, end to end through the real CLI and real git (`runtime.guardrails`): a conflict given
to the agent to resolve (`on_conflict: resolve`), and merged work another task's retry would undo
(`protect_merged`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import RENDEZVOUS, git, init_repo, query, run_orchard
from tests.test_engine_acceptance import plan_text, task

FIRST = "@wait-for {rv}/second-started\n@write notes.txt alpha\\nfirst's line\\nomega"


def second_waits(rv: Path, repo: Path) -> str:
    """Directives for `second`'s first attempt: start, then wait until `first` merged (its branch is deleted once
    merged), then change the line `first` changed: a conflict."""
    branch = repo / ".orchard" / "git" / "refs" / "heads" / "orchard" / "*" / "task" / "first"
    return (f"@if-attempt 1 @touch {rv}/second-started\n@if-attempt 1 @wait-for {branch}\n"
            f"@if-attempt 1 @wait-gone {branch}\n@if-attempt 1 @write notes.txt alpha\\nsecond's line\\nomega\n")


def notes_repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "notes", {"notes.txt": "alpha\nshared line\nomega\n"})


def attempts(repo: Path, task_id: str) -> list[tuple[int, str, str]]:
    return [(n, o, d) for n, o, d in query(repo, "SELECT number, outcome, detail FROM attempts WHERE task_id = ? "
                                                 "ORDER BY number", task_id)]


def prompt(repo: Path, task_id: str, number: int) -> str:
    return next((repo / ".orchard" / "runs").glob(f"*/prompts/{task_id}.{number}.*")).read_text()


def test_a_resolver_sees_the_markers_and_both_sides_and_one_that_drops_the_other_sides_lines_is_refused(
        tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    repo, rv = notes_repo(tmp_path), RENDEZVOUS / f"{tmp_path.name}-resolve"
    rv.mkdir()
    second = (second_waits(rv, repo)
              + f"@if-attempt 2 @if-contains notes.txt <<<<<<< @touch {rv}/saw-markers\n"
              "@if-attempt 2 @write notes.txt alpha\\nsecond's line\\nomega\n"  # drops first's line
              "@if-attempt 3 @write notes.txt alpha\\nfirst's line\\nsecond's line\\nomega")  # keeps both
    tasks = task("first", FIRST.format(rv=rv)) + task("second", second, "    on_conflict: resolve\n    retries: 2\n")
    result = run_orchard("run", str(write_plan(plan_text(tasks, parallel=2))), cwd=repo, timeout=180)
    assert result.code == 0, result.out + result.err
    outcomes = attempts(repo, "second")
    assert [o for _, o, _ in outcomes] == ["success", "rejected", "success"]
    assert "lines the integration side had are gone" in outcomes[1][2] and "first's line" in outcomes[1][2]
    assert (rv / "saw-markers").exists()  # the resolver's worktree held git's markers
    told = prompt(repo, "second", 2)
    assert "notes.txt" in told and "orchard: merge task first" in told  # the paths and the other side's commits
    assert "orchard: task second (attempt 1)" in told  # and its own previous result's
    assert "result was refused" in prompt(repo, "second", 3) and "first's line" in prompt(repo, "second", 3)
    run_id = str(query(repo, "SELECT id FROM runs")[0][0])
    final = git(repo, "show", f"orchard/{run_id}/integration:notes.txt")
    assert final == "alpha\nfirst's line\nsecond's line\nomega"


@pytest.mark.parametrize("mode", ["warn", "reject"])
def test_a_retry_that_overwrites_a_line_another_task_merged_is_named_or_refused(
        mode: str, tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    repo, rv = notes_repo(tmp_path), RENDEZVOUS / f"{tmp_path.name}-protect"
    rv.mkdir()
    second = (second_waits(rv, repo)  # a conflict: rerun from the new tip, which has first's line
              + "@if-attempt 2 @write notes.txt alpha\\nsecond's line\\nomega\n"  # overwrites it
              + "@if-attempt 3 @write notes.txt alpha\\nfirst's line\\nsecond's line\\nomega")
    tasks = task("first", FIRST.format(rv=rv)) + task("second", second, f"    protect_merged: {mode}\n    retries: 2\n")
    result = run_orchard("run", str(write_plan(plan_text(tasks, parallel=2))), cwd=repo, timeout=180)
    assert result.code == 0, result.out + result.err
    doc = run_orchard("status", "--json", cwd=repo).json()
    row = next(t for t in doc["tasks"] if t["id"] == "second")
    run_id = doc["run"]["id"]
    final = git(repo, "show", f"orchard/{run_id}/integration:notes.txt")
    if mode == "warn":
        assert [o for _, o, _ in attempts(repo, "second")] == ["success", "success"]
        (warning,) = row["warnings"]
        assert "task second" in warning and "task first" in warning and "first's line" in warning
        assert "warning: task second" in result.out  # the summary
        (summary,) = [json.loads(d)["summary"] for (d,) in query(repo, "SELECT data FROM events "
                                                                      "WHERE type = 'run.finished'")]
        assert summary["warnings"][0]["others"] == ["first"]
        assert final == "alpha\nsecond's line\nomega"  # merged as the user allowed, and they were told
    else:
        outcomes = attempts(repo, "second")
        assert [o for _, o, _ in outcomes] == ["success", "rejected", "success"]
        assert "task first" in outcomes[1][2] and "first's line" in outcomes[1][2]
        assert "first's line" in prompt(repo, "second", 3)  # the feedback names the line to keep
        assert row["warnings"] == [] and final == "alpha\nfirst's line\nsecond's line\nomega"
