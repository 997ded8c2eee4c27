"""orchard.plan: random YAML-able input must give a Plan or a PlanError, never any other exception."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchard.core.model import Plan
from orchard.errors import PlanError
from orchard.plan import load

NAMES = [
    "base",
    "parallel",
    "defaults",
    "agents",
    "tracks",
    "tasks",
    "id",
    "name",
    "prompt",
    "prompt_file",
    "depends_on",
    "files",
    "agent",
    "verify",
    "timeout",
    "retries",
    "priority",
    "track",
    "estimate",
    "allow_empty",
    "type",
    "command",
    "max_parallel",
    "env",
    "env_pass",
    "fallback",
    "stall_timeout",
    "prompt_via",
    "a",
    "b",
    "c",
    "all",
    "p.md",
    "../p.md",
    "30m",
    "stdin",
    "default",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 70)
    | st.sampled_from(NAMES)
    | st.text(max_size=6)
    | st.floats(allow_nan=False, allow_infinity=False)
)
KEYS = st.sampled_from(NAMES) | st.integers(0, 2) | st.booleans() | st.none() | st.text(max_size=4)
TREES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5), max_leaves=25
)
IDS = st.sampled_from(["a", "b", "c", "d", "e"])


def either(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes any random structure."""
    return st.sampled_from(range(16)).flatmap(lambda n: TREES if n == 15 else valid)


PROMPTS = st.fixed_dictionaries({"prompt": either(st.just("do it"))}) | st.fixed_dictionaries(
    {"prompt_file": either(st.sampled_from(["p.md", "p.md", "p.md", "../p.md", "missing.md", "bad.md"]))}
)
TASK = st.tuples(
    PROMPTS,
    st.fixed_dictionaries(
        {"id": either(IDS)},
        optional={
            "depends_on": either(st.lists(IDS, max_size=2) | IDS),
            "files": either(st.lists(st.sampled_from(["src/x.py", "*.py"]), max_size=2)),
            "agent": either(st.sampled_from(["a", "a", "b", "nope"])),
            "verify": either(st.sampled_from(["pytest -q", "", None, ["make", "check"]])),
            "timeout": either(st.sampled_from(["30m", "1h30m", 90])),
            "retries": either(st.integers(0, 3)),
            "priority": either(st.integers(-2, 2)),
            "track": either(st.sampled_from(["t1", "t2"])),
            "allow_empty": either(st.booleans()),
        },
    ),
).map(lambda parts: {**parts[0], **parts[1]})
AGENT = st.fixed_dictionaries(
    {"type": either(st.just("command")), "command": either(st.just(["run", "{prompt_file}"]) | st.just("run it"))},
    optional={
        "max_parallel": either(st.integers(1, 3)),
        "prompt_via": either(st.sampled_from(["file", "stdin", "arg"])),
        "env": either(st.dictionaries(st.sampled_from(["A", "B"]), st.text(max_size=3), max_size=2)),
        "env_pass": either(st.just("all") | st.lists(st.sampled_from(["HOME", "PATH"]))),
        "fallback": either(st.lists(st.sampled_from(["a", "b"]), max_size=1)),
        "stall_timeout": either(st.sampled_from(["5m", "90s"])),
    },
)


def task_key(task: Any) -> str:
    """Tasks in one fuzzed plan mostly have distinct ids (duplicates still come from random trees)."""
    return repr(task.get("id") if isinstance(task, dict) else task)


PLAN = st.fixed_dictionaries(
    {
        "tasks": either(st.lists(either(TASK), min_size=1, max_size=4, unique_by=task_key)),
        "agents": either(st.fixed_dictionaries({"a": either(AGENT)}, optional={"b": either(AGENT)})),
    },
    optional={
        "base": either(st.just("main")),
        "parallel": either(st.integers(1, 5)),
        "defaults": either(
            st.fixed_dictionaries(
                {},
                optional={"agent": st.just("a"), "timeout": either(st.just("5m")), "verify": either(st.just("make"))},
            )
        ),
        "tracks": either(st.dictionaries(st.sampled_from(["t1", "t2"]), st.lists(IDS, max_size=3), max_size=2)),
    },
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository-like directory with a few prompt files for fuzzed plans to point at."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "repo").mkdir()
    (root / "p.md").write_text("outside the repo", encoding="utf-8")
    (root / "repo" / "p.md").write_text("a prompt", encoding="utf-8")
    (root / "repo" / "bad.md").write_bytes(b"\xff")
    return root / "repo"


def load_or_plan_error(path: Path, repo: Path) -> None:
    """Loading must return a Plan or raise PlanError with at least one problem."""
    try:
        assert isinstance(load(path, repo), Plan)
    except PlanError as exc:
        assert exc.problems


@FUZZ
@given(data=TREES)
def test_random_structures_as_yaml_plan(workdir: Path, data: Any) -> None:
    path = workdir / "random.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    load_or_plan_error(path, workdir)


@FUZZ
@given(data=PLAN)
def test_plan_shaped_structures_as_yaml_plan(workdir: Path, data: Any) -> None:
    path = workdir / "plan.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    load_or_plan_error(path, workdir)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tasks=st.lists(either(TASK), min_size=1, max_size=3), config=PLAN, tracks=TREES)
def test_plan_shaped_structures_as_directories(workdir: Path, tasks: list[Any], config: Any, tracks: Any) -> None:
    ws, prompts = workdir / "ws", workdir / "prompts"
    for directory in (ws, prompts):
        directory.mkdir(exist_ok=True)
        for old in directory.iterdir():
            old.unlink()
    config.pop("tasks", None)
    (ws / "orchard.json").write_text(json.dumps(config), encoding="utf-8")
    (ws / "tracks.json").write_text(json.dumps(tracks), encoding="utf-8")
    (prompts / "orchard.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    for number, task in enumerate(tasks):
        (ws / f"w{number}.json").write_text(json.dumps(task), encoding="utf-8")
        front = (
            {k: v for k, v in task.items() if k not in ("prompt", "prompt_file")} if isinstance(task, dict) else task
        )
        (prompts / f"m{number}.md").write_text(f"---\n{yaml.safe_dump(front)}---\nbody\n", encoding="utf-8")
    load_or_plan_error(ws, workdir)
    load_or_plan_error(prompts, workdir)


def test_a_fuzz_shaped_plan_can_be_valid(workdir: Path) -> None:
    data = {"agents": {"a": {"type": "command", "command": "run"}}, "tasks": [{"id": "a", "prompt_file": "p.md"}]}
    path = workdir / "valid.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load(path, workdir).task("a").prompt == "a prompt"


def test_cyclic_yaml_aliases_are_problems(workdir: Path) -> None:
    path = workdir / "alias.yaml"
    path.write_text(
        "agents: {a: &x {type: command, command: [run, *x]}}\ntasks: &t [{id: a, prompt: x, depends_on: *t}]\n",
        encoding="utf-8",
    )
    with pytest.raises(PlanError) as info:
        load(path, workdir)
    assert {p.field for p in info.value.problems} == {"agents.a.command", "depends_on"}


@FUZZ
@given(text=st.text(max_size=200) | st.sampled_from(["a: 2020-13-45", "a: !!int x", "a: !!bool x", "a: !!timestamp x"]))
def test_random_text_as_yaml_plan(workdir: Path, text: str) -> None:
    path = workdir / "text.yaml"
    path.write_text(text, encoding="utf-8")
    load_or_plan_error(path, workdir)


@pytest.mark.parametrize(
    "text",
    [
        "tasks: [{id: a, prompt: x, timeout: 2020-13-45}]",
        "tasks: [{id: a, prompt: !!int x}]",
        "tasks: [{id: a, prompt: x, allow_empty: !!bool maybe}]",
        "parallel: !!timestamp never\ntasks: []",
    ],
)
def test_yaml_constructor_errors_are_problems(workdir: Path, text: str) -> None:
    path = workdir / "ctor.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PlanError) as info:
        load(path, workdir)
    (problem,) = info.value.problems
    assert problem.message.startswith("invalid YAML: cannot read a value")


def test_huge_numbers_are_problems(workdir: Path) -> None:
    digits = "9" * 5000
    path = workdir / "huge.yaml"
    path.write_text(
        f"parallel: -{digits}\ntasks: [{{id: a, prompt: x, retries: -{digits}, timeout: {digits}}}]", encoding="utf-8"
    )
    with pytest.raises(PlanError) as info:
        load(path, workdir)
    assert len(info.value.problems) == 1  # Python refuses to read the integer at all
    ws = workdir / "huge-ws"
    ws.mkdir()
    (ws / "t.json").write_text(f'{{"prompt": "x", "retries": {digits}}}', encoding="utf-8")
    with pytest.raises(PlanError) as info:
        load(ws, workdir)
    assert info.value.problems[0].message.startswith("invalid JSON")
