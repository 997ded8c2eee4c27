"""What `orchard plan` shows of the environment each task's worktree gets, and what `orchard doctor` says of include
patterns that name nothing to copy."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import git, run_orchard
from tests.test_engine_acceptance import plan_text, task

ENVIRONMENT = """environment:
  include: [.env]
  setup: [[python, -m, venv, .venv], "pip install -e ."]
  setup_inputs: [pyproject.toml]
  keep: [.venv]
  teardown: [[docker, compose, down]]
  setup_timeout: 2m
  ports: 3
  env: {DATABASE_URL: "postgres://admin:hunter2@localhost/app_{slot}"}
"""


def _section(out: str) -> list[str]:
    """The lines of the environment section of `orchard plan`'s output."""
    lines = out.splitlines()
    start = lines.index("environment of each task's worktree:")
    return lines[start:]


def test_plan_shows_each_tasks_environment_and_only_what_differs_for_a_task_with_its_own(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    (repo / ".worktreeinclude").write_text("# local settings\nconfig/local.json\n\n")
    tasks = (task("plain", "go") + task("lean", "go", "    environment: {setup_inputs: [], keep: [], ports: 0}\n")
             + task("same", "go", "    environment: {include: [.env]}\n")
             + task("bare", "go", "    environment: {setup: [], teardown: []}\n"))
    plan = write_plan(ENVIRONMENT + plan_text(tasks))
    result = run_orchard("plan", str(plan), cwd=repo)
    assert result.code == 0, result.err
    assert _section(result.out) == [
        "environment of each task's worktree:",
        "  include: .env",
        "  include from .worktreeinclude: config/local.json",
        "  setup: python -m venv .venv && pip install -e .",
        "  cached: setup reruns only when pyproject.toml changes",
        "  teardown: docker compose down",
        "  setup_timeout: 2m00s",
        "  keep: .venv",
        "  ports: 3 per task from $ORCHARD_PORT (also $CONDUCTOR_PORT)",
        "  env: DATABASE_URL",
        "  task lean: setup runs before every attempt (no setup_inputs); no keep; no ports",
        "  task bare: no setup; no teardown",
    ]
    assert "hunter2" not in result.out  # env values may be secrets: names only
    data = run_orchard("plan", str(plan), "--json", cwd=repo).json()["environment"]
    assert data["setup"] == [["python", "-m", "venv", ".venv"], ["pip", "install", "-e", "."]]
    assert data["source"] == "plan" and data["cached"] and data["worktreeinclude"] == ["config/local.json"]
    assert list(data["tasks"]) == ["lean", "bare"] and data["tasks"]["lean"]["cached"] is False
    assert "hunter2" not in json.dumps(data)


def test_plan_says_nothing_of_an_environment_when_there_is_none(repo: Path, write_plan: Callable[..., Path]) -> None:
    plan = write_plan(plan_text(task("t", "go")))
    result = run_orchard("plan", str(plan), cwd=repo)
    assert result.code == 0 and "environment" not in result.out, result.out
    assert run_orchard("plan", str(plan), "--json", cwd=repo).json()["environment"] is None
    only_setup = write_plan("environment:\n  setup: [make]\n" + plan_text(task("t", "go")), name="setup.yaml")
    shown = run_orchard("plan", str(only_setup), cwd=repo)
    assert _section(shown.out) == ["environment of each task's worktree:", "  setup: make",
                                   "  setup runs before every attempt (no setup_inputs)"]


def test_doctor_warns_of_include_patterns_that_match_no_file_naming_the_pattern_and_its_line(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    (repo / ".gitignore").write_text(".env\n")
    git(repo, "commit", "-qam", "ignore .env")
    (repo / ".env").write_text("TOKEN=1\n")
    (repo / "notes.local").write_text("mine")  # untracked, not ignored: still copied, so it counts
    (repo / ".worktreeinclude").write_text("# copied into worktrees\n.env\nconfig/*.json\n!.env.example\n"
                                           "notes.local\nREADME.md\n")
    plan = write_plan("environment:\n  include: [.env, secrets/]\n" + plan_text(task("t", "go")))
    result = run_orchard("doctor", str(plan), "--json", cwd=repo)
    warnings = json.loads(result.out)["warnings"]
    assert [(w["file"], w.get("line"), w.get("field"), w["pattern"]) for w in warnings] == [
        (".worktreeinclude", 3, None, "config/*.json"),
        (".worktreeinclude", 6, None, "README.md"),  # tracked: every worktree has it already, nothing to copy
        (str(plan), None, "environment.include", "secrets/"),
    ]
    human = run_orchard("doctor", cwd=repo)
    assert ("warning: .worktreeinclude line 3: 'config/*.json' matches no untracked file in your checkout"
            in human.out), human.out
    assert "line 2" not in human.out and "line 5" not in human.out and "secrets/" not in human.out
    (repo / "config").mkdir()
    (repo / "config" / "dev.json").write_text("{}")
    again = json.loads(run_orchard("doctor", "--json", cwd=repo).out)["warnings"]
    assert [w["pattern"] for w in again] == ["README.md"]
