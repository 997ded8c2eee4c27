"""The pure scheduler under live control and backoff: cancelling named tasks, new limits and agents, failure
classes and the wait after a transient failure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from types import MappingProxyType

import pytest

from orchard.core.model import AgentSpec, Outcome, Plan, Task, TaskStatus
from orchard.core.retrying import RETRY_BACKOFF_CAP_S, backoff_s, failure_class
from orchard.core.scheduler import (
    Applied,
    AttemptEnded,
    CancelTasks,
    Kick,
    MergeEnded,
    Replanned,
    RunDone,
    Scheduler,
    StartAttempt,
    StatusChanged,
    StopAttempt,
)
from orchard.core.steering import apply_add_agent, apply_set

S = TaskStatus


def plan_of(*specs: dict[str, object], agents: Sequence[str] = ("a",), parallel: int = 3) -> Plan:
    tasks = [Task(**{"prompt": "p", "agent": "a", **spec}) for spec in specs]  # type: ignore[arg-type]
    return Plan.build(tasks, {n: AgentSpec(n, "command") for n in agents}, parallel=parallel)


def starts(actions: Sequence[object]) -> list[str]:
    return [a.task_id for a in actions if isinstance(a, StartAttempt)]


def test_cancelling_a_running_task_stops_it_blocks_its_dependents_and_the_run_goes_on() -> None:
    plan = plan_of({"id": "x"}, {"id": "y"}, {"id": "z"}, {"id": "after-x", "depends_on": ("x",)})
    sched = Scheduler(plan, 3)
    assert starts(sched.handle(Kick(), 0)) == ["x", "y", "z"]
    out = sched.handle(CancelTasks(("x",), request=7), 1)
    assert StopAttempt("x") in out and sched.status("x") is S.RUNNING  # cancelled once its attempt has stopped
    assert [a.result for a in out if isinstance(a, Applied)] == ["x: stopping its attempt"]
    sched.handle(AttemptEnded("x", Outcome.CANCELLED), 2)
    assert sched.status("x") is S.CANCELLED and sched.status("after-x") is S.BLOCKED
    for task_id in ("y", "z"):
        sched.handle(AttemptEnded(task_id, Outcome.SUCCESS), 3)
        out = sched.handle(MergeEnded(task_id, merged=True), 4)
    assert sched.status("y") is S.MERGED and sched.status("z") is S.MERGED
    assert RunDone(complete=True, reason="") in out  # every task ended: the blocked one makes the run failed


def test_a_cancelled_attempt_that_succeeded_before_the_stop_reached_it_is_not_merged() -> None:
    sched = Scheduler(plan_of({"id": "x"}), 1)
    sched.handle(Kick(), 0)
    sched.handle(CancelTasks(("x",)), 1)
    out = sched.handle(AttemptEnded("x", Outcome.SUCCESS), 2)
    assert sched.status("x") is S.CANCELLED and not any(type(a).__name__ == "StartMerge" for a in out)


def test_cancelling_waiting_merged_and_unknown_tasks_says_what_it_did() -> None:
    sched = Scheduler(plan_of({"id": "x"}, {"id": "w"}, {"id": "w2", "depends_on": ("w",)}, parallel=1), 1)
    sched.handle(Kick(), 0)
    sched.handle(AttemptEnded("x", Outcome.SUCCESS), 1)
    sched.handle(MergeEnded("x", merged=True), 2)  # w starts now
    sched.handle(CancelTasks(("w2",)), 3)
    out = sched.handle(CancelTasks(("x", "w2", "nope"), request=2), 4)
    assert [a.result for a in out if isinstance(a, Applied)] == [
        "x: already merged, left as is; w2: already cancelled, left as is; nope: no such task"]
    assert sched.status("w2") is S.CANCELLED and sched.status("w") is S.RUNNING


def test_lowering_parallel_holds_new_starts_without_stopping_any_and_raising_it_starts_more() -> None:
    specs: list[dict[str, object]] = [{"id": f"t{i}"} for i in range(6)]
    plan = plan_of(*specs)
    sched = Scheduler(plan, 3)
    assert len(starts(sched.handle(Kick(), 0))) == 3
    change = apply_set(plan, 3, [("parallel", 1)])
    out = sched.handle(Replanned(change.plan, change.parallel, request=1, changes=change.changes), 1)
    assert not any(isinstance(a, StopAttempt) for a in out) and sched.active_count() == 3
    assert [a.result for a in out if isinstance(a, Applied)] == ["parallel=1"]
    assert starts(sched.handle(AttemptEnded("t0", Outcome.SUCCESS), 2)) == []  # 2 still run: over the new limit
    assert starts(sched.handle(AttemptEnded("t1", Outcome.SUCCESS), 3)) == []
    assert starts(sched.handle(AttemptEnded("t2", Outcome.SUCCESS), 4)) == []  # three results wait to merge
    raised = apply_set(change.plan, 1, [("parallel", 4)])
    assert len(starts(sched.handle(Replanned(raised.plan, raised.parallel), 5))) == 3  # the rest, at once


def test_pausing_an_agent_pauses_its_waiting_tasks_and_a_fallback_added_live_takes_them() -> None:
    plan = plan_of({"id": "x"}, {"id": "y"}, parallel=1)
    sched = Scheduler(plan, 1)
    sched.handle(Kick(), 0)
    paused = apply_set(plan, 1, [("a.paused", True)])
    out = sched.handle(Replanned(paused.plan, 1), 1)
    assert StatusChanged("y", S.PAUSED, "a paused by orchard set", None) in out
    assert starts(sched.handle(AttemptEnded("x", Outcome.SUCCESS), 2)) == []  # nothing starts on a paused agent
    added = apply_add_agent(paused.plan, 1, {"name": "b", "agent": {"type": "command", "max_parallel": None,
                                                                     "options": {"command": ["run"]}},
                                              "fallback_for": ["a"]})
    assert added.changes == ("added agent b (command)", "a falls back to b")
    out = sched.handle(Replanned(added.plan, 1), 3)
    sched.handle(MergeEnded("x", merged=True), 4)
    started = [a for a in sched.handle(Kick(), 5) + out if isinstance(a, StartAttempt)]
    assert [(a.task_id, a.agent) for a in started] == [("y", "b")]


def test_unpausing_an_agent_queues_its_tasks_again() -> None:
    plan = plan_of({"id": "x"}, parallel=1)
    sched = Scheduler(Plan.build(plan.tasks, {"a": AgentSpec("a", "command", None, MappingProxyType(
        {"paused": True}))}), 1)
    assert starts(sched.handle(Kick(), 0)) == [] and sched.status("x") is S.PAUSED
    resumed = apply_set(sched.plan, 1, [("a.paused", False)])
    assert starts(sched.handle(Replanned(resumed.plan, 1), 1)) == ["x"]


def test_setting_an_unknown_key_or_agent_is_refused_with_what_exists() -> None:
    plan = plan_of({"id": "x"})
    with pytest.raises(ValueError, match=r"the run has no agent 'ghost' \(its agents: a\)"):
        apply_set(plan, 1, [("ghost.max_parallel", 2)])
    with pytest.raises(ValueError, match="expected one of parallel, budget_usd"):
        apply_set(plan, 1, [("a.colour", 2)])


def test_raising_an_exhausted_budget_lets_the_run_go_on() -> None:
    plan = replace(plan_of({"id": "x"}, {"id": "y"}, parallel=1), budget_usd=1.0)
    sched = Scheduler(plan, 1)
    sched.handle(Kick(), 0)
    assert starts(sched.handle(AttemptEnded("x", Outcome.SUCCESS, cost_usd=1.5), 1)) == []
    raised = apply_set(plan, 1, [("budget_usd", 5.0)])
    assert starts(sched.handle(Replanned(raised.plan, 1), 2)) == ["y"]


def test_a_transient_failure_waits_its_backoff_paused_then_runs_again() -> None:
    sched = Scheduler(plan_of({"id": "x", "retries": 3, "retry_backoff_s": 10.0}), 1)
    sched.handle(Kick(), 100.0)
    out = sched.handle(AttemptEnded("x", Outcome.CRASHED), 100.0)
    paused = [a for a in out if isinstance(a, StatusChanged) and a.status is S.PAUSED]
    assert len(paused) == 1 and paused[0].until is not None and 108.0 <= paused[0].until <= 112.0
    assert "backing off" in paused[0].reason and starts(out) == []
    assert sched.next_wakeup() == paused[0].until
    assert starts(sched.handle(Kick(), paused[0].until - 0.01)) == []
    assert starts(sched.handle(Kick(), paused[0].until)) == ["x"]
    second = sched.handle(AttemptEnded("x", Outcome.API_ERROR), 200.0)
    until = next(a.until for a in second if isinstance(a, StatusChanged) and a.status is S.PAUSED)
    assert until is not None and 216.0 <= until <= 224.0  # doubled


def test_a_permanent_failure_is_not_retried_unless_retry_on_names_it() -> None:
    sched = Scheduler(plan_of({"id": "x", "retries": 2}, {"id": "y", "retries": 2,
                                                          "retry_on": (Outcome.NO_CHANGES,)}), 2)
    sched.handle(Kick(), 0)
    sched.handle(AttemptEnded("x", Outcome.NO_CHANGES), 1)
    assert sched.status("x") is S.FAILED
    out = sched.handle(AttemptEnded("y", Outcome.NO_CHANGES), 1)
    assert starts(out) == ["y"]  # at once: only transient failures back off


def test_failure_classes_and_backoff_bounds() -> None:
    assert failure_class(Outcome.TIMEOUT) == "transient" and failure_class(Outcome.AUTH) == "permanent"
    assert failure_class(Outcome.VERIFY_FAILED) == "feedback" and failure_class(Outcome.RATE_LIMITED) == "none"
    task = Task(id="t", prompt="p", agent="a", retry_backoff_s=10.0)
    waits = [backoff_s(task, Outcome.CRASHED, n) for n in range(1, 12)]
    assert all(w <= RETRY_BACKOFF_CAP_S for w in waits) and waits[-1] == pytest.approx(RETRY_BACKOFF_CAP_S, rel=0.2)
    assert waits == [backoff_s(task, Outcome.CRASHED, n) for n in range(1, 12)]  # pure: the same every time
    assert backoff_s(replace(task, id="u"), Outcome.CRASHED, 1) != waits[0]  # jittered per task
    assert backoff_s(task, Outcome.VERIFY_FAILED, 1) == 0.0
