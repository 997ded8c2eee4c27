"""orchard.plan: prompt_file resolution, containment in the repository, symlinks and UTF-8."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchard.errors import PlanError, Problem
from orchard.plan import load

AGENT = "agents:\n  a: {type: command, command: run}\n"


def yaml_plan(path: Path, prompt_file: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(AGENT + f"tasks:\n  - {{id: t, prompt_file: {json.dumps(prompt_file)}}}\n", encoding="utf-8")
    return path


def the_problem(path: Path, repo_root: Path | None) -> Problem:
    with pytest.raises(PlanError) as info:
        load(path, repo_root)
    (problem,) = info.value.problems
    return problem


def test_prompt_file_relative_to_the_naming_file(tmp_path: Path) -> None:
    (tmp_path / "plans" / "prompts").mkdir(parents=True)
    (tmp_path / "plans" / "prompts" / "t.md").write_text("Do it\n", encoding="utf-8")
    plan = load(yaml_plan(tmp_path / "plans" / "plan.yaml", "prompts/t.md"), tmp_path)
    task = plan.task("t")
    assert task.prompt == "Do it"
    assert task.prompt_file == str((tmp_path / "plans" / "prompts" / "t.md").resolve())


def test_prompt_file_may_point_anywhere_inside_the_repo(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "t.md").write_text("From docs", encoding="utf-8")
    plan = load(yaml_plan(tmp_path / "plans" / "plan.yaml", "../docs/t.md"), tmp_path)
    assert plan.task("t").prompt == "From docs"


def test_prompt_file_not_found(tmp_path: Path) -> None:
    problem = the_problem(yaml_plan(tmp_path / "plan.yaml", "x.md"), tmp_path)
    assert problem.message == "prompt_file 'x.md' not found"
    assert (problem.file, problem.task, problem.field) == (str(tmp_path / "plan.yaml"), "t", "prompt_file")


def test_prompt_file_outside_the_repository(tmp_path: Path) -> None:
    problem = the_problem(yaml_plan(tmp_path / "plan.yaml", "../../etc/passwd"), tmp_path)
    assert problem.message == "prompt_file '../../etc/passwd' resolves outside the repository"


def test_absolute_prompt_file_outside_the_repository(tmp_path: Path) -> None:
    problem = the_problem(yaml_plan(tmp_path / "repo" / "plan.yaml", "/etc/hostname"), tmp_path / "repo")
    assert problem.message == "prompt_file '/etc/hostname' resolves outside the repository"


def test_symlink_escaping_the_repository_is_refused(tmp_path: Path) -> None:
    repo, outside = tmp_path / "repo", tmp_path / "secret.md"
    repo.mkdir()
    outside.write_text("secret", encoding="utf-8")
    (repo / "link.md").symlink_to(outside)
    problem = the_problem(yaml_plan(repo / "plan.yaml", "link.md"), repo)
    assert problem.message == "prompt_file 'link.md' resolves outside the repository"


def test_symlink_inside_the_repository_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real.md").write_text("real text", encoding="utf-8")
    (tmp_path / "link.md").symlink_to(tmp_path / "real.md")
    plan = load(yaml_plan(tmp_path / "plan.yaml", "link.md"), tmp_path)
    assert plan.task("t").prompt == "real text"
    assert plan.task("t").prompt_file == str((tmp_path / "real.md").resolve())


def test_symlink_loop_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "loop.md").symlink_to(tmp_path / "loop.md")
    problem = the_problem(yaml_plan(tmp_path / "plan.yaml", "loop.md"), tmp_path)
    assert problem.message.startswith("prompt_file 'loop.md' ") and problem.field == "prompt_file"


def test_invalid_utf8_prompt_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.md").write_bytes(b"ok \xff\xfe broken")
    problem = the_problem(yaml_plan(tmp_path / "plan.yaml", "bad.md"), tmp_path)
    assert problem.message == "prompt_file 'bad.md' is not valid UTF-8 (byte 0xff at offset 3)"


def test_prompt_file_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.md").mkdir()
    problem = the_problem(yaml_plan(tmp_path / "plan.yaml", "dir.md"), tmp_path)
    assert problem.message == "prompt_file 'dir.md' is not a regular file"


def test_plan_outside_the_repository_is_confined_to_its_directory(tmp_path: Path) -> None:
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    repo.mkdir()
    (elsewhere / "sub").mkdir(parents=True)
    (elsewhere / "sub" / "ok.md").write_text("fine", encoding="utf-8")
    (tmp_path / "up.md").write_text("too far", encoding="utf-8")
    assert load(yaml_plan(elsewhere / "plan.yaml", "sub/ok.md"), repo).task("t").prompt == "fine"
    problem = the_problem(yaml_plan(elsewhere / "plan.yaml", "../up.md"), repo)
    assert problem.message == "prompt_file '../up.md' resolves outside the plan directory"
    problem = the_problem(yaml_plan(elsewhere / "plan.yaml", "../up.md"), None)
    assert problem.message == "prompt_file '../up.md' resolves outside the plan directory"


def test_markdown_symlink_escaping_the_repository(tmp_path: Path) -> None:
    repo, prompts = tmp_path / "repo", tmp_path / "repo" / "prompts"
    prompts.mkdir(parents=True)
    (tmp_path / "outside.md").write_text("secret", encoding="utf-8")
    (prompts / "orchard.yaml").write_text(AGENT, encoding="utf-8")
    (prompts / "ok.md").write_text("fine", encoding="utf-8")
    (prompts / "leak.md").symlink_to(tmp_path / "outside.md")
    with pytest.raises(PlanError) as info:
        load(prompts, repo)
    (problem,) = info.value.problems
    assert problem.message == "the prompt file resolves outside the repository"
    assert problem.file == str(prompts / "leak.md")


def test_markdown_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "orchard.yaml").write_text(AGENT, encoding="utf-8")
    (tmp_path / "t.md").write_bytes(b"\xc3\x28")
    with pytest.raises(PlanError) as info:
        load(tmp_path, tmp_path)
    (problem,) = info.value.problems
    assert problem.message == "the prompt file is not valid UTF-8 (byte 0xc3 at offset 0)"


def test_workstream_prompt_file_relative_to_the_json(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "orchard.json").write_text(json.dumps({"agents": {"a": {"type": "command", "command": "run"}}}))
    (ws / "p.md").write_text("from p", encoding="utf-8")
    (ws / "one.json").write_text(json.dumps({"prompt_file": "p.md"}), encoding="utf-8")
    (ws / "two.json").write_text(json.dumps({"prompt_file": os.path.join("..", "..", "x.md")}))
    with pytest.raises(PlanError) as info:
        load(ws, tmp_path)
    (problem,) = info.value.problems
    assert problem.message == "prompt_file '../../x.md' resolves outside the repository"
    assert (problem.file, problem.task) == (str(ws / "two.json"), "two")
