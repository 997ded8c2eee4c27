"""Estimates learned from history (`core.estimates`, `runtime.estimates`): a task without a declared `estimate`
takes the median of its earlier successful attempts, else of its agent's on prompts of a similar size."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import orchard
from orchard.core.estimates import Sample, learned
from orchard.core.model import AgentSpec, Plan, Task
from tests.conftest import query, run_orchard
from tests.test_engine_acceptance import plan_text, task


def plan_of(*tasks: Task, estimates: str = "learned") -> Plan:
    return Plan.build(list(tasks), {"a": AgentSpec("a", "command"), "b": AgentSpec("b", "command")},
                      estimates=estimates)


def test_same_id_first_then_similar_prompts_of_the_agent_then_the_default() -> None:
    plan = plan_of(Task("known", "x" * 100, "a", estimated="default"),
                   Task("new", "y" * 100, "a", estimated="default"),
                   Task("odd", "z" * 1000, "a", estimated="default"),
                   Task("declared", "w" * 100, "a", estimate_s=42.0))
    samples = [Sample("known", "a", 100, 30.0), Sample("known", "a", 100, 50.0), Sample("known", "a", 100, 400.0),
               Sample("other1", "a", 120, 10.0), Sample("other2", "a", 80, 20.0), Sample("other3", "a", 60, 90.0),
               Sample("declared", "a", 100, 1.0), Sample("elsewhere", "b", 100, 5.0)]
    got, said = learned(plan, samples)
    assert got.task("known").estimate_s == 50.0 and got.task("known").estimated == "history"
    assert said["known"] == "median of 3 earlier attempt(s) of this task"
    # every attempt on agent a with a prompt within 2x of 100 characters: 1, 10, 20, 30, 50, 90, 400
    assert got.task("new").estimate_s == 30.0
    assert "prompts of a similar size" in said["new"]
    assert got.task("odd").estimated == "default" and got.task("odd").estimate_s == plan.task("odd").estimate_s
    assert got.task("declared").estimate_s == 42.0 and "declared" not in said


def test_declared_turns_learning_off() -> None:
    plan = plan_of(Task("t", "p", "a", estimated="default"), estimates="declared")
    assert learned(plan, [Sample("t", "a", 1, 99.0)]) == (plan, {})


def test_a_second_run_learns_the_first_runs_durations(repo: Path, write_plan: Callable[[str], Path]) -> None:
    text = plan_text(task("slow", "@sleep 1.2\n@write s.txt s") + task("quick", "@write q.txt q")
                     + task("fixed", "@write f.txt f", "    estimate: 7m\n"))
    first = orchard.run(write_plan(text), repo=repo)
    assert first.status == "completed"
    durations = dict(query(repo, "SELECT task_id, finished_at - started_at FROM attempts"))
    preview = run_orchard("plan", str(write_plan(text)), "--json", cwd=repo)
    assert preview.code == 0, preview.err
    estimates = preview.json()["estimates"]
    assert estimates["slow"]["source"] == "history" and abs(estimates["slow"]["estimate_s"] - durations["slow"]) < 0.1
    assert estimates["slow"]["estimate_s"] > estimates["quick"]["estimate_s"]
    assert estimates["fixed"] == {"estimate_s": 420.0, "source": "declared", "basis": ""}
    second = orchard.run(write_plan(text), repo=repo)
    snapshot = json.loads(query(repo, "SELECT plan_json FROM runs WHERE id = ?", second.run_id)[0][0])
    kept = {t["id"]: (t["estimated"], t["estimate_s"]) for t in snapshot["tasks"]}
    assert kept["slow"][0] == "history" and kept["fixed"] == ("declared", 420.0)
    off = run_orchard("plan", str(write_plan("estimates: declared\n" + text)), "--json", cwd=repo)
    assert off.json()["estimates"]["slow"]["source"] == "default"
