"""Multi-provider routing: `agent: [a, b]` starts a task on the first of its agents with a free slot that is not
paused, and records which one ran; a paused preference falls through to the next, then to fallbacks."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import orchard
from orchard.core.model import AgentSpec, Outcome, Plan, Task
from orchard.core.scheduler import AttemptEnded, Kick, Scheduler, StartAttempt
from orchard.errors import PlanError
from orchard.plan import load
from tests.conftest import RENDEZVOUS, agent_block, run_orchard
from tests.test_engine_acceptance import journal, task


def routed_plan(limit_a: int = 1) -> Plan:
    agents = {"a": AgentSpec("a", "command", limit_a), "b": AgentSpec("b", "command", None),
              "c": AgentSpec("c", "command", None)}
    tasks = [Task("first", "p", "a"), Task("second", "p", "a", agents=("a", "b")),
             Task("third", "p", "a", agents=("a", "b"))]
    return Plan.build(tasks, agents, parallel=4)


def started(actions: Sequence[object]) -> dict[str, str]:
    return {a.task_id: a.agent for a in actions if isinstance(a, StartAttempt)}


def test_the_first_preference_with_a_free_slot_takes_the_task() -> None:
    sched = Scheduler(routed_plan(limit_a=1), 4)
    assert started(sched.handle(Kick(), 0)) == {"first": "a", "second": "b", "third": "b"}


def test_a_rate_limited_preference_is_skipped_for_the_next_one() -> None:
    plan = Plan.build([Task("x", "p", "a", agents=("a", "b")), Task("y", "p", "a", agents=("a", "b"))],
                      {"a": AgentSpec("a", "command"), "b": AgentSpec("b", "command", 1)}, parallel=1)
    sched = Scheduler(plan, 1)
    assert started(sched.handle(Kick(), 0)) == {"x": "a"}
    out = sched.handle(AttemptEnded("x", Outcome.RATE_LIMITED, resume_at=100.0), 1)
    assert started(out) == {"x": "b"}  # a is paused: b takes it rather than waiting
    assert sched.status("y").value == "queued"  # b is full, a paused: y waits, not paused (b will free up)


def test_the_plan_accepts_a_list_and_names_an_unknown_agent_in_it(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("agents: {a: {type: command, command: [x]}, b: {type: command, command: [x]}}\n"
                    "tasks:\n  - {id: t, prompt: p, agent: [b, a]}\n  - {id: u, prompt: p, agent: [a]}\n")
    plan = load(good)
    assert plan.task("t").choices == ("b", "a") and plan.task("t").agent == "b"
    assert plan.task("u").choices == ("a",) and plan.task("u").agents == ()
    bad = tmp_path / "bad.yaml"
    bad.write_text("agents: {a: {type: command, command: [x]}}\ntasks:\n  - {id: t, prompt: p, agent: [a, nope]}\n"
                   "  - {id: v, prompt: p, agent: []}\n")
    try:
        load(bad)
    except PlanError as exc:
        text = str(exc)
    else:
        raise AssertionError("an unknown agent in the list loaded")
    assert "t" in text and "unknown agent 'nope'" in text and "agent" in text
    assert "expected an agent's name or a non-empty list of them" in text


def test_a_task_starts_on_its_second_agent_while_the_first_is_at_max_parallel(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    gate = RENDEZVOUS / f"routing-{repo.parent.name}"
    agents = agent_block("strong", max_parallel=1) + agent_block("cheap")
    tasks = (task("hold", f"@touch {gate}.started\n@wait-for {gate}.release\n@write hold.txt h", "    agent: strong\n")
             + task("routed", f"@wait-for {gate}.started\n@write routed.txt r\n@touch {gate}.release",
                    "    agent: [strong, cheap]\n"))
    plan = f"parallel: 4\ndefaults: {{retries: 0}}\nagents:\n{agents}tasks:\n{tasks}"
    result = orchard.run(write_plan(plan), repo=repo)
    assert result.status == "completed", result
    ran = {e["task"]: e["agent"] for e in journal(repo) if e["type"] == "attempt.started"}
    assert ran == {"hold": "strong", "routed": "cheap"}
    status = json.loads(run_orchard("status", "--json", cwd=repo).out)
    assert {t["id"]: t["agent"] for t in status["tasks"]}["routed"] == "cheap"
