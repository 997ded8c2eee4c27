"""A run records the variables it started with (`PATH` above all; `runs.environment`), and its setup and verify use
them in every later session: a resume or retry from another shell runs them as the run began (`orchard show`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.conftest import git, run_orchard
from tests.test_engine_acceptance import plan_text, task


def checker(where: Path, code: int) -> Path:
    """A directory holding a `checker` program that says which it is and exits with `code`."""
    where.mkdir()
    tool = where / "checker"
    tool.write_text(f'#!/bin/sh\necho "checker from {where.name}"\nexit {code}\n')
    tool.chmod(0o755)
    return where


def test_a_retry_from_another_shell_verifies_with_the_path_the_run_started_with(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    first, second = checker(tmp_path / "first-bin", 0), checker(tmp_path / "second-bin", 1)
    tasks = task("a", "@if-attempt 1 @exit 1\n@write a.txt a", "    verify: [checker]\n")
    plan = write_plan(plan_text(tasks))
    token = "ghp_" + "abcdefghijklmnopqrstuvwxyz0123456789"
    ran = run_orchard("run", str(plan), cwd=repo, env={"PATH": f"{first}{os.pathsep}{os.environ['PATH']}",
                                                       "LC_LEAKED": token})
    assert ran.code == 1, ran.out + ran.err  # the agent failed; the preflight's verify passed with first-bin
    showing = run_orchard("show", "--json", cwd=repo)
    assert showing.code == 0, showing.err + ran.out + ran.err
    shown = showing.json()
    assert shown["environment"]["PATH"].startswith(str(first))
    assert shown["environment"]["HOME"] == os.environ["HOME"]
    assert "LC_LEAKED" not in shown["environment"]  # a basic name, but a value that looks like a secret
    stored = [p.read_bytes() for p in (repo / ".orchard").glob("state.db*")]
    assert stored and not [data for data in stored if token.encode() in data]
    retried = run_orchard("retry", "a", cwd=repo, env={"PATH": f"{second}{os.pathsep}{os.environ['PATH']}"})
    assert retried.code == 0, retried.out + retried.err
    log = next((repo / ".orchard" / "runs").glob("*/logs/a.2.log")).read_text()
    assert "checker from first-bin" in log and "second-bin" not in log
    run_id = shown["id"]
    assert "a.txt" in git(repo, "ls-tree", "--name-only", f"orchard/{run_id}/integration")
    text = run_orchard("show", cwd=repo)
    assert text.code == 0 and f"PATH={first}" in text.out
