"""orchard.plan.load: the three plan formats, their detection, and their format-specific rules."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from orchard.core.model import DEFAULT_PARALLEL, AgentSpec, Plan
from orchard.errors import PlanError, Problem
from orchard.plan import load

SETTINGS = """\
base: main
parallel: 3
defaults: {agent: fast, timeout: 20m, retries: 2, verify: "pytest -q"}
agents:
  fast: {type: command, command: [python, agent.py, "{prompt_file}"], max_parallel: 2}
tracks: {api: [schema, handlers]}
"""


def write(path: Path, text: str) -> Path:
    """Write dedented text, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path, repo_root: Path | None = None) -> list[Problem]:
    """The problems of a plan that must not load."""
    with pytest.raises(PlanError) as info:
        load(path, repo_root)
    return info.value.problems


def only(problems: list[Problem], fragment: str) -> Problem:
    """The single problem whose message contains `fragment`."""
    found = [p for p in problems if fragment in p.message]
    assert len(found) == 1, problems
    return found[0]


def comparable(plan: Plan) -> tuple[object, ...]:
    """A plan's content without where it came from (source, prompt_file paths)."""
    tasks = tuple(dataclasses.replace(t, prompt_file=None) for t in plan.tasks)
    return tasks, dict(plan.agents), dict(plan.tracks), plan.base, plan.parallel


def yaml_plan(root: Path) -> Plan:
    write(root / "prompts" / "handlers.md", "Write the handlers.\n")
    body = SETTINGS + textwrap.dedent(
        """\
        tasks:
          - id: schema
            prompt: "Add the order schema"
            files: [src/schema.py]
            estimate: 5m
          - id: handlers
            name: Handlers
            prompt_file: prompts/handlers.md
            depends_on: [schema]
            verify: [pytest, tests/test_handlers.py]
            priority: 3
          - id: docs
            prompt: Document it
            depends_on: handlers
            allow_empty: true
            track: api
            timeout: 1h
        """
    )
    return load(write(root / "plan.yaml", body), root)


def prompts_plan(root: Path) -> Plan:
    d = root / "pdir"
    write(d / "orchard.yaml", SETTINGS)
    write(d / "1-schema.md", "---\nid: schema\nfiles: src/schema.py\nestimate: 5m\n---\n\nAdd the order schema\n")
    write(
        d / "2-handlers.md",
        "---\nid: handlers\nname: Handlers\ndepends_on: [schema]\n"
        "verify: [pytest, tests/test_handlers.py]\npriority: 3\n---\nWrite the handlers.\n",
    )
    write(
        d / "3-docs.md",
        "---\nid: docs\ndepends_on: handlers\nallow_empty: true\ntrack: api\ntimeout: 1h\n---\nDocument it\n",
    )
    return load(d, root)


def workstreams_plan(root: Path) -> Plan:
    d = root / "ws"
    write(d / "orchard.yaml", SETTINGS.replace("tracks: {api: [schema, handlers]}\n", ""))
    write(d / "tracks.json", json.dumps({"api": ["schema", "handlers"]}))
    write(d / "handlers.md", "Write the handlers.")
    streams = [
        {"id": "schema", "prompt": "Add the order schema", "files": ["src/schema.py"], "estimate": "5m"},
        {
            "name": "Handlers",
            "prompt_file": "handlers.md",
            "depends_on": ["schema"],
            "verify": ["pytest", "tests/test_handlers.py"],
            "priority": 3,
        },
        {
            "id": "docs",
            "prompt": "Document it",
            "depends_on": "handlers",
            "allow_empty": True,
            "track": "api",
            "timeout": "1h",
        },
    ]
    for name, stream in zip(["a-schema", "handlers", "z-docs"], streams, strict=True):
        write(d / f"{name}.json", json.dumps(stream))
    return load(d, root)


def test_yaml_plan_loads_every_field(tmp_path: Path) -> None:
    plan = yaml_plan(tmp_path)
    assert plan.ids == ("schema", "handlers", "docs")
    assert plan.base == "main" and plan.parallel == 3
    assert plan.source == str(tmp_path / "plan.yaml")
    schema, handlers, docs = plan.tasks
    assert schema.prompt == "Add the order schema" and schema.prompt_file is None
    assert schema.files == ("src/schema.py",) and schema.estimate_s == 300.0
    assert schema.verify == ("pytest", "-q") and schema.timeout_s == 1200.0 and schema.retries == 2
    assert schema.agent == "fast" and schema.track == "api"
    assert handlers.prompt == "Write the handlers."
    assert handlers.prompt_file == str((tmp_path / "prompts" / "handlers.md").resolve())
    assert handlers.name == "Handlers" and handlers.priority == 3 and handlers.depends_on == ("schema",)
    assert handlers.verify == ("pytest", "tests/test_handlers.py")
    assert docs.depends_on == ("handlers",) and docs.allow_empty is True and docs.timeout_s == 3600.0
    assert plan.tracks == {"api": ("schema", "handlers", "docs")}
    assert docs.track == "api"
    assert plan.agents["fast"] == AgentSpec(
        "fast", "command", 2, {"command": ("python", "agent.py", "{prompt_file}"), "prompt_via": "file"}
    )
    assert plan.task("docs") is docs and "docs" in plan


def test_three_formats_give_the_same_plan(tmp_path: Path) -> None:
    from_yaml = yaml_plan(tmp_path)
    from_prompts = prompts_plan(tmp_path)
    from_workstreams = workstreams_plan(tmp_path)
    assert comparable(from_yaml) == comparable(from_prompts) == comparable(from_workstreams)
    assert from_prompts.task("schema").prompt_file == str((tmp_path / "pdir" / "1-schema.md").resolve())


def test_yml_suffix_and_string_paths(tmp_path: Path) -> None:
    write(tmp_path / "p.yml", "agents: {a: {type: command, command: run}}\ntasks: [{id: t, prompt: go}]\n")
    plan = load(str(tmp_path / "p.yml"), str(tmp_path))
    assert plan.ids == ("t",) and plan.parallel == DEFAULT_PARALLEL and plan.base is None
    assert plan.agents["a"].options["command"] == ("run",)


def test_prompts_dir_defaults_id_to_stem_and_every_md_is_a_task(tmp_path: Path) -> None:
    write(tmp_path / "plan.yaml", "agents: {a: {type: command, command: run}}\n")
    write(tmp_path / "README.md", "Read me first.\n")
    write(tmp_path / "b-task.md", "  \n Do B. \n\n")
    write(tmp_path / ".hidden.md", "ignored")
    (tmp_path / "sub").mkdir()
    plan = load(tmp_path)
    assert plan.ids == ("README", "b-task")
    assert plan.task("b-task").prompt == "Do B."
    assert plan.task("README").agent == "a"


def test_prompts_dir_front_matter_errors(tmp_path: Path) -> None:
    write(tmp_path / "orchard.yaml", "agents: {a: {type: command, command: run}}\n")
    write(tmp_path / "empty.md", "---\nid: empty\n---\n\n   \n")
    write(tmp_path / "open.md", "---\nid: open\nbody without end\n")
    write(tmp_path / "syntax.md", "---\nid: [oops\n---\nbody\n")
    write(tmp_path / "list.md", "---\n- a\n---\nbody\n")
    write(tmp_path / "field.md", "---\nprompt: inline\ndepend_on: [x]\n---\nbody\n")
    problems = problems_of(tmp_path)
    empty = only(problems, "the prompt is empty")
    assert (empty.file, empty.task, empty.field) == (str(tmp_path / "empty.md"), "empty", "prompt")
    assert only(problems, "never closed").file == str(tmp_path / "open.md")
    syntax = only(problems, "invalid YAML")
    assert syntax.file == str(tmp_path / "syntax.md") and "line 3" in syntax.message
    assert only(problems, "front matter must be a mapping").file == str(tmp_path / "list.md")
    assert only(problems, "unknown field 'prompt'").task == "field"
    assert only(problems, "did you mean 'depends_on'").field == "depend_on"


def test_prompts_dir_with_both_settings_files(tmp_path: Path) -> None:
    write(tmp_path / "orchard.yaml", "agents: {a: {type: command, command: run}}\n")
    write(tmp_path / "plan.yaml", "parallel: 2\n")
    write(tmp_path / "t.md", "go")
    problem = only(problems_of(tmp_path), "found both orchard.yaml and plan.yaml")
    assert problem.file == str(tmp_path / "orchard.yaml")


def test_settings_file_may_not_list_tasks(tmp_path: Path) -> None:
    write(tmp_path / "orchard.yaml", "agents: {a: {type: command, command: run}}\ntasks: []\n")
    write(tmp_path / "t.md", "go")
    assert only(problems_of(tmp_path), "'tasks' is not allowed here").field == "tasks"


def test_workstreams_id_from_stem_and_orchard_json(tmp_path: Path) -> None:
    write(
        tmp_path / "orchard.json", json.dumps({"agents": {"a": {"type": "command", "command": ["run"]}}, "parallel": 7})
    )
    write(tmp_path / "first.json", json.dumps({"prompt": "one"}))
    write(tmp_path / "second.json", json.dumps({"prompt": "two", "depends_on": "first", "agent": "a"}))
    write(tmp_path / "notes.md", "a prompt file, not a task")
    plan = load(tmp_path)
    assert plan.ids == ("first", "second") and plan.parallel == 7
    assert plan.task("second").depends_on == ("first",)


def test_workstream_json_errors(tmp_path: Path) -> None:
    write(tmp_path / "orchard.yaml", "agents: {a: {type: command, command: run}}\n")
    write(tmp_path / "broken.json", '{\n  "prompt": "x",\n  "id": \n}\n')
    write(tmp_path / "array.json", "[1, 2]")
    write(tmp_path / "tracks.json", '{"t": ["ok"]')
    write(tmp_path / "ok.json", '{"prompt": "fine", "dependson": []}')
    problems = problems_of(tmp_path)
    broken = only(problems, "invalid JSON at line 4")
    assert broken.file == str(tmp_path / "broken.json")
    assert only(problems, "must be a JSON object").file == str(tmp_path / "array.json")
    assert only(problems, "invalid JSON at line 1").file == str(tmp_path / "tracks.json")
    assert only(problems, "unknown field 'dependson' (did you mean 'depends_on'?)").task == "ok"


def test_workstreams_tracks_json(tmp_path: Path) -> None:
    write(tmp_path / "orchard.yaml", "agents: {a: {type: command, command: run}}\ntracks: {x: [one]}\n")
    write(tmp_path / "tracks.json", json.dumps({"y": ["two", "three"], "x": ["three"]}))
    for name in ("one", "two", "three"):
        write(tmp_path / f"{name}.json", json.dumps({"prompt": name}))
    problem = only(problems_of(tmp_path), "track 'x' is defined twice")
    assert problem.file == str(tmp_path / "tracks.json")
    write(tmp_path / "tracks.json", json.dumps({"y": ["two", "three"]}))
    assert load(tmp_path).tracks == {"x": ("one",), "y": ("two", "three")}


@pytest.mark.parametrize("name", ["plan.txt", "plan.json", "missing.yaml"])
def test_unsupported_or_missing_plan_path(tmp_path: Path, name: str) -> None:
    if name != "missing.yaml":
        write(tmp_path / name, "tasks: []")
    (problem,) = problems_of(tmp_path / name)
    assert problem.file == str(tmp_path / name)
    expected = "plan not found" if name == "missing.yaml" else "not a plan"
    assert problem.message.startswith(expected)


def test_directory_without_plan_files(tmp_path: Path) -> None:
    write(tmp_path / "tracks.json", "{}")
    write(tmp_path / "orchard.yaml", "parallel: 2")
    (problem,) = problems_of(tmp_path)
    assert "the directory holds no plan" in problem.message


def test_unreadable_plan_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = write(tmp_path / "plan.yaml", "tasks: []")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    problem = only(problems_of(plan), "cannot read the file")
    assert problem.message == "cannot read the file: Permission denied"
    assert problem.file == str(plan)


def test_plan_file_not_utf8(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_bytes(b"tasks:\n  - id: a\n    prompt: caf\xe9\n")
    assert "not valid UTF-8 (byte 0xe9" in only(problems_of(plan), "UTF-8").message


def test_yaml_top_level_shapes(tmp_path: Path) -> None:
    cases = {
        "list.yaml": ("- a\n", "the top level must be a mapping"),
        "empty.yaml": ("", "the top level must be a mapping"),
        "notasks.yaml": ("agents: {a: {type: command, command: run}}\n", "no 'tasks' list"),
        "tasksmap.yaml": ("tasks: {a: 1}\n", "'tasks' must be a list"),
        "notalist.yaml": (
            "tasks: [1, {id: a, prompt: x}]\nagents: {a: {type: command, command: r}}\n",
            "each task must be a mapping",
        ),
        "syntax.yaml": ("tasks:\n  - id: a\n   prompt: [x\n", "invalid YAML at line"),
        "emptylist.yaml": ("tasks: []\nagents: {a: {type: command, command: r}}\n", "the plan has no tasks"),
    }
    for name, (text, fragment) in cases.items():
        problem = only(problems_of(write(tmp_path / name, text)), fragment)
        assert problem.file == str(tmp_path / name)
    assert only(problems_of(tmp_path / "notalist.yaml"), "each task").task == "#1"


def test_null_id_in_a_workstream_falls_back_to_the_file_stem(tmp_path: Path) -> None:
    write(tmp_path / "orchard.yaml", "agents: {a: {type: command, command: run}}\n")
    write(tmp_path / "stem.json", json.dumps({"id": None, "prompt": "p"}))
    assert load(tmp_path).ids == ("stem",)
