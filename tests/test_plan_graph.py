"""orchard.plan: dependency and track checks (unknown, self, cycles, track order) and large plans."""

from __future__ import annotations

import textwrap
from itertools import pairwise
from pathlib import Path

import pytest

from orchard.core.graph import find_cycles
from orchard.core.model import AgentSpec, Plan, Task
from orchard.errors import PlanError, Problem
from orchard.plan import load, validate_graph

AGENT = "agents:\n  a: {type: command, command: run}\n"


def problems_of(tmp_path: Path, text: str) -> list[Problem]:
    path = tmp_path / "plan.yaml"
    path.write_text(AGENT + textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(PlanError) as info:
        load(path, tmp_path)
    return info.value.problems


def load_text(tmp_path: Path, text: str) -> Plan:
    path = tmp_path / "plan.yaml"
    path.write_text(AGENT + textwrap.dedent(text), encoding="utf-8")
    return load(path, tmp_path)


def messages(problems: list[Problem]) -> list[str]:
    return [p.message for p in problems]


def test_three_cycle_is_printed_with_arrows(tmp_path: Path) -> None:
    (problem,) = problems_of(
        tmp_path,
        """
        tasks:
          - {id: a, prompt: x, depends_on: c}
          - {id: b, prompt: x, depends_on: a}
          - {id: c, prompt: x, depends_on: b}
        """,
    )
    assert problem.message == "dependency cycle: a → b → c → a"
    assert (problem.task, problem.field, Path(problem.file).name) == ("a", "depends_on", "plan.yaml")


def test_each_cycle_reported_once(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        tasks:
          - {id: root, prompt: x}
          - {id: a, prompt: x, depends_on: [root, b]}
          - {id: b, prompt: x, depends_on: a}
          - {id: c, prompt: x, depends_on: [a, d]}
          - {id: d, prompt: x, depends_on: c}
          - {id: e, prompt: x, depends_on: [d, b]}
        """,
    )
    assert messages(problems) == ["dependency cycle: a → b → a", "dependency cycle: c → d → c"]


def test_cycle_inside_larger_component_is_a_real_cycle(tmp_path: Path) -> None:
    # x and y form one strongly connected component with several cycles; one is printed and it closes.
    (problem,) = problems_of(
        tmp_path,
        """
        tasks:
          - {id: x, prompt: p, depends_on: [z, w]}
          - {id: y, prompt: p, depends_on: [x]}
          - {id: z, prompt: p, depends_on: [y]}
          - {id: w, prompt: p, depends_on: [x]}
        """,
    )
    chain = problem.message.removeprefix("dependency cycle: ").split(" → ")
    assert chain[0] == chain[-1] == "x" and len(set(chain)) == len(chain) - 1
    deps = {"x": {"z", "w"}, "y": {"x"}, "z": {"y"}, "w": {"x"}}
    assert all(before in deps[after] for before, after in pairwise(chain))


def test_self_and_unknown_dependencies(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        tasks:
          - {id: schema, prompt: x, depends_on: [schema]}
          - {id: api, prompt: x, depends_on: [shema, nothing-like-it]}
        """,
    )
    assert messages(problems) == [
        "a task cannot depend on itself",
        "depends on unknown task 'shema' (did you mean 'schema'?)",
        "depends on unknown task 'nothing-like-it'",
    ]
    assert [(p.task, p.field) for p in problems] == [
        ("schema", "depends_on"),
        ("api", "depends_on"),
        ("api", "depends_on"),
    ]


def test_tracks_from_settings_and_task_fields(tmp_path: Path) -> None:
    plan = load_text(
        tmp_path,
        """
        tracks: {api: [one, two], empty: []}
        tasks:
          - {id: three, prompt: x, track: api}
          - {id: two, prompt: x, depends_on: one}
          - {id: one, prompt: x, track: api}
          - {id: solo, prompt: x, track: other}
        """,
    )
    assert plan.tracks == {"api": ("one", "two", "three"), "empty": (), "other": ("solo",)}
    assert [t.track for t in plan.tasks] == ["api", "api", "api", "other"]


def test_track_problems(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        tracks:
          api: [b, a, ghost, b]
          web: [c]
          ops: nope-not-a-list-of-known
          bad: {x: 1}
        tasks:
          - {id: a, prompt: x}
          - {id: b, prompt: x, depends_on: a}
          - {id: c, prompt: x, track: api}
        """,
    )
    found = {p.message: (p.task, p.field) for p in problems}
    assert found == {
        "track 'api' lists 'b' before its dependency 'a'": ("b", "track"),
        "track 'api' lists unknown task 'ghost'": ("", "tracks.api"),
        "track 'api' lists task 'b' twice": ("b", "tracks.api"),
        "track 'ops' lists unknown task 'nope-not-a-list-of-known'": ("", "tracks.ops"),
        "expected a list of task ids, got a mapping": ("", "tracks.bad"),
        "task 'c' is in two tracks: 'web' and 'api'": ("c", "track"),
    }


def test_track_order_contradicting_dependencies_indirectly(tmp_path: Path) -> None:
    # c depends on b (outside the track) which depends on a; the track runs c before a.
    (problem,) = problems_of(
        tmp_path,
        """
        tracks: {t: [c, a]}
        tasks:
          - {id: a, prompt: x}
          - {id: b, prompt: x, depends_on: a}
          - {id: c, prompt: x, depends_on: b}
        """,
    )
    assert problem.message == "track order contradicts dependencies: a → b → c → a"
    assert problem.field == "track"


def test_big_chain_and_fan_plan_loads(tmp_path: Path) -> None:
    lines = [AGENT, "tasks:\n"]
    for i in range(10_000):
        deps = [f"t{i - 1}"] if i % 100 else ([f"t{i - 100}"] if i else [])
        if i % 100 == 50:
            deps.append("t0")  # fan out from the first task
        track = f", track: k{i % 7}" if i % 100 == 0 else ""
        lines.append(f"  - {{id: t{i}, prompt: step {i}, depends_on: [{', '.join(deps)}]{track}}}\n")
    path = tmp_path / "big.yaml"
    path.write_text("".join(lines), encoding="utf-8")
    plan = load(path)
    assert len(plan.tasks) == 10_000 and plan.task("t9999").depends_on == ("t9998",)
    assert plan.task("t150").depends_on == ("t149", "t0")
    assert plan.tracks["k0"][:2] == ("t0", "t700")


def test_big_cycle_is_found_without_recursion(tmp_path: Path) -> None:
    n = 20_000
    order = [f"t{i}" for i in range(n)]
    succ = {f"t{i}": [f"t{(i + 1) % n}"] for i in range(n)}
    (cycle,) = find_cycles(order, succ)
    assert len(cycle) == n + 1 and cycle[0] == cycle[-1] == "t0" and cycle[1] == "t1"


def test_validate_graph_on_a_plan_built_in_code() -> None:
    agents = {"a": AgentSpec("a", "command")}
    tasks = [Task("x", "p", "a", depends_on=("y",)), Task("y", "p", "a", depends_on=("x", "z"))]
    problems = validate_graph(Plan.build(tasks, agents, tracks={"t": ("y", "q")}, source="code"))
    assert messages(problems) == [
        "track 't' lists unknown task 'q'",
        "depends on unknown task 'z'",
        "dependency cycle: x → y → x",
    ]
    assert all(p.file == "code" for p in problems)
    assert validate_graph(Plan.build([Task("x", "p", "a")], agents)) == []


def test_default_track_yields_to_an_explicit_listing(tmp_path: Path) -> None:
    plan = load_text(
        tmp_path,
        """
        defaults: {track: main}
        tracks: {side: [b]}
        tasks:
          - {id: a, prompt: x}
          - {id: b, prompt: x}
          - {id: c, prompt: x, track: other}
        """,
    )
    assert plan.tracks == {"side": ("b",), "main": ("a",), "other": ("c",)}
