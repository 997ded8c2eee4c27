"""Parents' results in a child's prompt (`context:`): the agent's own summary, the files its merged change touched
and its merge commit, stored per attempt, capped and redacted, shown by `orchard show TASK`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import orchard
from orchard.core.context import HEADING, ChangedFile, ParentResult, capped_summary, parents_section
from orchard.store import Store
from orchard.testing import FakeModelServer, text, write_file
from tests.conftest import Result, run_orchard
from tests.test_engine_acceptance import plan_text, task
from tests.test_real_agents_engine import write_plan as real_plan

SECRET = "s3cr3t-value-of-the-token"


def prompt_of(repo: Path, run_id: str, task_id: str, attempt: int = 1) -> str:
    return (repo / ".orchard" / "runs" / run_id / "prompts" / f"{task_id}.{attempt}.md").read_text()


def test_a_command_agents_summary_file_reaches_its_dependents_prompts_unless_context_none(
        repo: Path, write_plan: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAIN_TOKEN", SECRET)
    tasks = (task("design", f"@write api.md # API\\nget(x)\n@write notes/plan.txt step one\n"
                            f"@summary Designed get(x) in api.md; the token is {SECRET}", "    name: The design\n")
             + task("implement", "@write impl.py x = 1", "    depends_on: [design]\n")
             + task("files-only", "@write f.txt f", "    depends_on: [design]\n    context: files\n")
             + task("blind", "@write b.txt b", "    depends_on: [design]\n    context: none\n")
             + task("root", "@write r.txt r"))
    result = orchard.run(write_plan(plan_text(tasks)), repo=repo)
    assert result.status == "completed", result
    store = Store(repo / ".orchard" / "state.db")
    try:
        design = store.task(result.run_id, "design")
        summary = store.attempts(result.run_id, "design")[0].summary
    finally:
        store.close()
    assert summary == "Designed get(x) in api.md; the token is [REDACTED:CHAIN_TOKEN]"
    implement = prompt_of(repo, result.run_id, "implement")
    assert HEADING in implement and "### design: The design" in implement
    assert "> Designed get(x) in api.md; the token is [REDACTED:CHAIN_TOKEN]" in implement
    assert SECRET not in implement
    assert f"Merge commit: {design.merged_commit}" in implement and design.merged_commit
    assert "- api.md (+2 -0)" in implement and "- notes/plan.txt (+1 -0)" in implement
    files_only = prompt_of(repo, result.run_id, "files-only")
    assert "- api.md (+2 -0)" in files_only and "Designed get(x)" not in files_only
    assert HEADING not in prompt_of(repo, result.run_id, "blind")
    assert HEADING not in prompt_of(repo, result.run_id, "root")  # nothing to build on
    shown = run_orchard("show", "design", "--json", cwd=repo)
    assert shown.code == 0, shown.err
    assert shown.json()["attempts"][0]["summary"] == summary
    text = run_orchard("show", "design", cwd=repo)
    assert "Designed get(x) in api.md" in text.out and "attempt 1 on fake: success" in text.out


def test_without_a_summary_the_prompt_still_names_the_parents_files_and_commit(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    tasks = task("a", "@write a.txt one\\ntwo") + task("b", "@write b.txt b", "    depends_on: [a]\n")
    result = orchard.run(write_plan(plan_text(tasks)), repo=repo)
    assert result.status == "completed", result
    prompt = prompt_of(repo, result.run_id, "b")
    assert "Its agent left no summary." in prompt and "- a.txt (+2 -0)" in prompt


def test_show_names_an_unknown_task_or_run_clearly(repo: Path, write_plan: Callable[[str], Path]) -> None:
    result = orchard.run(write_plan(plan_text(task("a", "@write a.txt a"))), repo=repo)
    assert result.status == "completed", result
    shown: Result = run_orchard("show", "nope", cwd=repo)
    assert shown.code == 2 and "no run and no task 'nope'" in shown.err and "Traceback" not in shown.err
    assert run_orchard("show", result.run_id, "--json", cwd=repo).json()["id"] == result.run_id


def test_summaries_are_capped_with_a_marker() -> None:
    long = "x" * 5000
    kept = capped_summary(long)
    assert kept.startswith("x" * 4096) and kept.endswith("[… summary cut at 4096 characters by orchard]")
    assert capped_summary("  short  ") == "short"


def test_the_section_lists_each_parent_and_follows_the_mode() -> None:
    parents = [ParentResult("a", "Alpha", "did A\nand more", (ChangedFile("x.py", 3, 1), ChangedFile("img", None,
                                                                                                     None)), "c1"),
               ParentResult("b", None, "", (), None)]
    text = parents_section(parents, "summary")
    assert text.startswith(HEADING)
    assert "### a: Alpha\nMerge commit: c1\nIts agent's summary:\n> did A\n> and more" in text
    assert "- x.py (+3 -1)" in text and "- img (binary)" in text
    assert "### b\nIts agent left no summary.\nFiles changed: none" in text
    assert "did A" not in parents_section(parents, "files") and "- x.py" in parents_section(parents, "files")
    assert parents_section(parents, "none") == "" and parents_section([], "summary") == ""


@pytest.mark.usefixtures("no_real_credentials")
def test_real_claude_design_then_implement_gets_the_designs_result_and_files(
        repo: Path, tmp_path: Path, server: FakeModelServer) -> None:
    server.add_script("design", [write_file("docs/api.md", "# API\nget(key) -> value\n"),
                                 text("Designed the store API: get(key) returns the value; see docs/api.md.")])
    server.add_script("implement", [write_file("store.py", "def get(key):\n    return key\n"),
                                    text("Implemented get.")])
    tasks: list[dict[str, Any]] = [
        {"id": "design", "prompt": "Design the store API. [[script:design]]"},
        {"id": "implement", "prompt": "Implement the API. [[script:implement]]", "depends_on": ["design"]}]
    result = orchard.run(real_plan(tmp_path, "claude", server, tasks), repo=repo)
    assert result.status == "completed", server.problems
    seen = json.dumps([r.body for r in server.requests_for("implement")])
    recorded = prompt_of(repo, result.run_id, "implement")
    for prompt in (recorded, seen):
        assert "Designed the store API: get(key) returns the value; see docs/api.md." in prompt
        assert "docs/api.md (+2 -0)" in prompt
    assert HEADING in recorded


def test_a_summary_file_that_is_a_link_is_not_followed(
        repo: Path, tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    secret = tmp_path / "private.txt"
    secret.write_text("the contents of a file the agent points orchard at\n")
    tasks = (task("sneaky", f"@write s.txt s\n@summary-link {secret}")
             + task("after", "@write a.txt a", "    depends_on: [sneaky]\n"))
    result = orchard.run(write_plan(plan_text(tasks)), repo=repo)
    assert result.status == "completed", result
    prompt = prompt_of(repo, result.run_id, "after")
    assert "Its agent left no summary." in prompt and "the contents of a file" not in prompt
