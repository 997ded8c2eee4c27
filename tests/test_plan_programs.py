"""Warnings before money is spent (issue 14, item 7): `orchard doctor PLAN` flags a command agent's or a verify's
program that cannot be started, a verify whose program is missing fails saying so, and `orchard run` warns about
uncommitted files, naming those the plan uses."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from orchard.core.model import Plan
from orchard.core.plan_refs import programs, referenced_files
from orchard.plan import load
from tests.conftest import PYTHON, git, run_orchard
from tests.test_cli import assert_clean_exit, plan_text, task

PLAN = f"""\
agents:
  fake: {{type: command, command: [{PYTHON}, tools/agent.py, "{{prompt_file}}"]}}
  typo: {{type: command, command: [no-such-agent-program, x]}}
environment:
  setup: [[tools/setup.sh]]
tasks:
  - {{id: a, agent: fake, prompt: hi, verify: [pyhton3, -c, "pass"]}}
  - {{id: b, agent: fake, prompt: hi, verify: [scripts/check.sh, --fast]}}
  - id: c
    agent: typo
    prompt: hi
    verify: [.venv/bin/pytest, -q]
    environment: {{setup: [[python3, -m, venv, .venv]]}}
"""


def loaded(repo: Path, text: str) -> Plan:
    path = repo / "plan.yaml"
    path.write_text(text)
    return load(path, repo)


def test_the_plan_names_its_programs_and_files(repo: Path) -> None:
    plan = loaded(repo, PLAN)
    uses = {(u.program, u.what, u.may_be_made) for u in programs(plan)}
    assert (PYTHON, "agent fake's command", False) in uses
    assert ("pyhton3", "task a's verify", True) in uses  # the plan's setup runs before it
    assert (".venv/bin/pytest", "task c's verify", True) in uses
    files = referenced_files(plan)
    assert files["tools/agent.py"] == "agent fake's command" and files["scripts/check.sh"] == "task b's verify"
    assert files["tools/setup.sh"] == "environment's setup or teardown"
    assert "-c" not in files and "{prompt_file}" not in files and "--fast" not in files


def test_doctor_flags_a_misspelt_verify_program_and_a_missing_agent_program(repo: Path, tmp_path: Path) -> None:
    (repo / "check.sh").write_text("#!/bin/sh\nexit 0\n")  # there, but not executable
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text(task("a", "@write a.txt a", extra="    verify: [pyhton3, -c, pass]\n")
                              + task("b", "@write b.txt b", extra="    verify: [./check.sh]\n")
                              + task("ok", "@write ok.txt ok", extra=f"    verify: [{PYTHON}, -c, pass]\n")))
    result = run_orchard("doctor", str(plan), "--json", cwd=repo, env={"PATH": os.environ["PATH"]})
    assert result.code == 3 and "Traceback" not in result.err
    found = {(p["used_by"], p["program"], p["problem"]) for p in json.loads(result.out)["programs"]}
    assert found == {("task a's verify", "pyhton3", "not found on PATH"),
                     ("task b's verify", "./check.sh", "not executable")}
    human = run_orchard("doctor", str(plan), cwd=repo, env={"PATH": os.environ["PATH"]})
    assert "task a's verify: program 'pyhton3' not found on PATH" in human.out

    agent = tmp_path / "agent.yaml"
    agent.write_text("agents:\n  mine: {type: command, command: [my-agnet, '{prompt_file}']}\n"
                     "tasks:\n  - {id: a, agent: mine, prompt: hi}\n")
    missing = run_orchard("doctor", str(agent), "--json", cwd=repo, env={"PATH": os.environ["PATH"]})
    assert missing.code == 3
    said = json.loads(missing.out)["programs"][0]["message"]
    assert said == "agent mine's command: program 'my-agnet' not found on PATH"


def test_a_verify_whose_program_is_missing_fails_saying_so(write_plan: Callable[[str], Path], repo: Path) -> None:
    # without the preflight (which refuses such a plan before any agent starts), the attempt's own verify
    plan = write_plan("preflight: off\n" + plan_text(task("a", "@write a.txt a",
                                                          extra="    verify: [pyhton3, -c, pass]\n")))
    result = run_orchard("run", str(plan), cwd=repo)
    assert_clean_exit(result, 1)
    status = run_orchard("status", "--json", cwd=repo).json()
    error = status["tasks"][0]["error"]
    assert "verify program not found on PATH: pyhton3" in error and "exit None" not in error
    assert "task a's verify: program 'pyhton3' not found on PATH" in result.out  # said before any agent ran


def test_run_warns_about_uncommitted_files_naming_those_the_plan_uses(repo: Path, tmp_path: Path) -> None:
    (repo / "tools").mkdir()
    (repo / "tools" / "agent.py").write_text("print('new agent')\n")  # untracked: tasks will not have it
    (repo / "notes.txt").write_text("scratch\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text("preflight: off\n" + plan_text(task("a", "@write a.txt a",
                                                        extra="    verify: [tools/agent.py]\n")))
    result = run_orchard("run", "--json", str(plan), cwd=repo)
    notes = [e["text"] for e in result.ndjson() if e["type"] == "run.note" and e.get("level") == "warning"]
    said = [n for n in notes if "uncommitted or untracked" in n]
    assert len(said) == 1, notes
    assert "your checkout has 2 uncommitted or untracked file(s)" in said[0]
    assert "tools/agent.py (task a's verify)" in said[0] and "notes.txt" not in said[0]

    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "tools")
    clean = run_orchard("run", "--json", str(tmp_path / "plan.yaml"), cwd=repo)
    assert not [e for e in clean.ndjson() if e["type"] == "run.note" and "uncommitted" in e.get("text", "")]
