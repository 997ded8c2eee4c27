"""Tasks added while a run is live (`orchard add`): by the user through the store, and by an agent from inside its
attempt through its outbox; validated against the run's plan, limited in number and depth, kept across a crash."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import pytest

import orchard
from orchard.core.model import AgentSpec, Plan, Task
from orchard.errors import PlanError
from orchard.plan.extend import add_tasks
from tests.conftest import RENDEZVOUS, query, run_orchard, wait_for
from tests.test_engine_acceptance import journal, plan_text, task


def children_file(tmp_path: Path, parent: str, name: str = "children.yaml", *, extra: str = "") -> Path:
    path = tmp_path / name
    path.write_text(f"tasks:\n  - {{id: {parent}-a, prompt: '@write {parent}-a.txt a', depends_on: [{parent}]}}\n"
                    f"  - {{id: {parent}-b, prompt: '@write {parent}-b.txt b', depends_on: [{parent}]{extra}}}\n")
    return path


def status_tasks(repo: Path) -> dict[str, dict[str, object]]:
    return {t["id"]: t for t in run_orchard("status", "--json", cwd=repo).json()["tasks"]}


def test_an_agent_adds_two_children_that_run_after_it_merges(
        repo: Path, tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    children = children_file(tmp_path, "split")
    result = orchard.run(write_plan(plan_text(task("split", f"@orchard add {children}\n@write split.txt s"))),
                         repo=repo)
    assert result.status == "completed", status_tasks(repo)
    tasks = status_tasks(repo)
    assert {t: tasks[t]["status"] for t in tasks} == {"split": "merged", "split-a": "merged", "split-b": "merged"}
    assert tasks["split-a"]["parent"] == "split" and tasks["split-b"]["parent"] == "split"
    assert tasks["split"]["parent"] is None
    events = journal(repo)
    order = [(e["type"], e["task"]) for e in events if e["type"] == "attempt.started"
             or (e["type"] == "task.status" and e["status"] == "merged")]
    assert order.index(("task.status", "split")) < order.index(("attempt.started", "split-a"))
    assert order.index(("task.status", "split")) < order.index(("attempt.started", "split-b"))
    log = (repo / ".orchard" / "runs" / result.run_id / "logs" / "split.1.log").read_text()
    assert "orchard add: added split-a, split-b (children of split)" in log
    snapshot = json.loads(query(repo, "SELECT plan_json FROM runs")[0][0])
    assert snapshot["added"] == ["split-a", "split-b"]
    assert [t["id"] for t in snapshot["tasks"]] == ["split", "split-a", "split-b"]


def test_a_looping_agent_is_stopped_at_the_depth_and_count_limits(
        repo: Path, tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    # each level's task adds the next level's; the third level is one too deep for max_add_depth 2
    for level in (1, 2, 3):
        (tmp_path / f"level{level}.yaml").write_text(
            f"- {{id: level{level}, prompt: \"@orchard add {tmp_path}/level{level + 1}.yaml\\n@write l{level}.txt x\","
            f" depends_on: [{'root' if level == 1 else f'level{level - 1}'}]}}\n")
    (tmp_path / "level4.yaml").write_text("- {id: level4, prompt: '@write l4.txt x', depends_on: [level3]}\n")
    (tmp_path / "many.yaml").write_text("".join(f"- {{id: many{i}, prompt: '@write m{i}.txt m'}}\n" for i in range(5)))
    tasks = task("root", f"@orchard add {tmp_path}/level1.yaml\n@write root.txt r") + task(
        "flood", f"@orchard add {tmp_path}/many.yaml\n@write flood.txt f")
    text = plan_text(tasks).replace("parallel: 4\n", "parallel: 4\nmax_add_depth: 2\nmax_added_tasks: 4\n")
    result = orchard.run(write_plan(text), repo=repo)
    assert result.status == "completed", status_tasks(repo)
    tasks_now = status_tasks(repo)
    assert set(tasks_now) == {"root", "flood", "level1", "level2"}
    logs = repo / ".orchard" / "runs" / result.run_id / "logs"
    assert ("task 'level2' was added 2 level(s) deep: its children would be deeper than max_add_depth (2)"
            in (logs / "level2.1.log").read_text())
    assert "orchard exited with 2" in (logs / "level2.1.log").read_text()
    flood = (logs / "flood.1.log").read_text()
    assert "the run may add at most 4 tasks (max_added_tasks)" in flood and "orchard exited with 2" in flood


def test_the_children_survive_a_sigkill_after_the_add_and_run_on_resume(
        repo: Path, tmp_path: Path, write_plan: Callable[[str], Path],
        background: Callable[..., Popen[str]]) -> None:
    children = children_file(tmp_path, "parent")
    gate = RENDEZVOUS / f"add-crash-{tmp_path.name}"
    prompt = f"@orchard add {children}\n@touch {gate}.added\n@wait-for {gate}.release 120\n@write parent.txt p"
    plan = write_plan(plan_text(task("parent", prompt, "    retries: 2\n")))
    proc = background("run", str(plan))
    wait_for(lambda: Path(f"{gate}.added").exists(), "the parent's add answered", timeout=60)
    assert {r[0] for r in query(repo, "SELECT task_id FROM tasks")} == {"parent", "parent-a", "parent-b"}
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    Path(f"{gate}.release").touch()
    resumed = run_orchard("resume", cwd=repo, timeout=120)
    assert resumed.code == 0, resumed.out + resumed.err
    tasks = status_tasks(repo)
    assert {t: tasks[t]["status"] for t in tasks} == {"parent": "merged", "parent-a": "merged",
                                                     "parent-b": "merged"}
    assert tasks["parent-a"]["parent"] == "parent"
    run_id = str(journal(repo)[0]["run_id"])
    second = (repo / ".orchard" / "runs" / run_id / "logs" / "parent.2.log").read_text()
    assert "parent-a, parent-b added already" in second  # the resumed parent asked again: nothing added twice


def test_a_user_adds_tasks_to_an_interrupted_run_and_resume_runs_them(
        repo: Path, tmp_path: Path, write_plan: Callable[[str], Path],
        background: Callable[..., Popen[str]]) -> None:
    gate = RENDEZVOUS / f"add-user-{tmp_path.name}"
    plan = write_plan(plan_text(task("first", f"@touch {gate}.started\n@wait-for {gate}.release 120\n"
                                              "@write first.txt f")))
    proc = background("run", str(plan))
    wait_for(lambda: Path(f"{gate}.started").exists(), "the first task started", timeout=60)
    extra = tmp_path / "extra.yaml"
    (tmp_path / "later.md").write_text("@write later.txt from a prompt file\n")
    extra.write_text("- {id: later, prompt_file: later.md, depends_on: [first]}\n")
    added = run_orchard("add", str(extra), cwd=repo)
    assert added.code == 0, added.err
    assert "add later" in added.out
    wait_for(lambda: ("later",) in query(repo, "SELECT task_id FROM tasks"), "the live run took the add")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    Path(f"{gate}.release").touch()
    assert run_orchard("resume", cwd=repo, timeout=120).code == 0
    tasks = status_tasks(repo)
    assert tasks["later"]["status"] == "merged" and tasks["later"]["parent"] is None


def test_bad_additions_are_refused_naming_the_file_task_and_field(
        repo: Path, tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    result = orchard.run(write_plan(plan_text(task("only", "@write o.txt o"))), repo=repo)
    assert result.status == "completed"
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {id: x, prompt: p, depends_on: [nope]}\n")
    done = run_orchard("add", str(bad), cwd=repo)
    assert done.code == 2 and "is completed: there is nothing left to steer" in done.err
    assert "Traceback" not in done.err
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("tasks: {id: x}\n")
    refused = run_orchard("add", str(garbage), cwd=repo)
    assert refused.code == 2 and "expected a list of tasks" in refused.err and "Traceback" not in refused.err
    missing = run_orchard("add", str(tmp_path / "missing.yaml"), cwd=repo)
    assert missing.code == 2 and "missing.yaml: cannot read it" in missing.err
    broken = tmp_path / "broken.yaml"
    broken.write_text("- {id: x, prompt: [unclosed\n")
    syntax = run_orchard("add", str(broken), cwd=repo)
    assert syntax.code == 2 and "broken.yaml: invalid YAML at line" in syntax.err


def test_the_checks_of_an_addition() -> None:
    plan = Plan.build([Task("a", "p", "x"), Task("b", "p", "x", depends_on=("a",))],
                      {"x": AgentSpec("x", "command"), "y": AgentSpec("y", "command")},
                      defaults={"retries": 3, "agent": "y"}, max_added_tasks=3)
    made = add_tasks(plan, [{"id": "c", "prompt": "q", "depends_on": ["b"]}], file="r.yaml")
    assert made.added == ("c",) and made.plan.task("c").retries == 3 and made.plan.task("c").agent == "y"
    assert made.plan.added == ("c",) and made.plan.ids == ("a", "b", "c")
    with pytest.raises(PlanError) as cycle:
        add_tasks(plan, [{"id": "c", "prompt": "q", "depends_on": ["d"]}, {"id": "d", "prompt": "q",
                                                                          "depends_on": ["c"]}], file="r.yaml")
    assert "r.yaml" in str(cycle.value) and "cycle" in str(cycle.value)
    with pytest.raises(PlanError) as clash:
        add_tasks(plan, [{"id": "a", "prompt": "other"}, {"id": "e", "prompt": "q", "agent": "zz"},
                         {"id": "f", "prompt": "q", "depends_on": ["ghost"]}], file="r.yaml")
    text = str(clash.value)
    assert "task 'a': field 'id': the run has a task 'a' already" in text
    assert "task 'e': field 'agent': unknown agent 'zz'" in text
    with pytest.raises(PlanError) as ghost:
        add_tasks(plan, [{"id": "f", "prompt": "q", "depends_on": ["ghost"]}], file="r.yaml")
    assert "task 'f'" in str(ghost.value) and "ghost" in str(ghost.value)
    with pytest.raises(PlanError) as many:
        add_tasks(plan, [{"id": f"n{i}", "prompt": "q"} for i in range(4)], file="r.yaml")
    assert "at most 3 tasks (max_added_tasks)" in str(many.value)
    with pytest.raises(PlanError) as deep:
        add_tasks(plan, [{"id": "g", "prompt": "q"}], file="r.yaml", parent="b", depth=3)
    assert "deeper than max_add_depth (3)" in str(deep.value)
