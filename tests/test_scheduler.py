"""The pure scheduler: ordering, limits, retries, blocking, tracks, file exclusion, pauses, restore."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchard.core.graph import critical_path, file_conflicts, find_cycles, format_cycle, globs_overlap, waves
from orchard.core.model import AgentSpec, Outcome, Plan, Task, TaskStatus
from orchard.core.scheduler import (
    AttemptEnded,
    Cancel,
    Kick,
    MergeEnded,
    Restored,
    RunDone,
    Scheduler,
    StartAttempt,
    StartMerge,
    StatusChanged,
    Stop,
    VerifyStarted,
)
from orchard.core.simulate import simulate

S = TaskStatus


def make_plan(specs: list[dict[str, object]], parallel: int = 4, agents: dict[str, int | None] | None = None,
              tracks: dict[str, tuple[str, ...]] | None = None) -> Plan:
    agent_specs = {name: AgentSpec(name, "command", limit) for name, limit in (agents or {"a": None}).items()}
    tasks = [Task(**{"prompt": "p", "agent": "a", **spec}) for spec in specs]  # type: ignore[arg-type]
    return Plan.build(tasks, agent_specs, tracks=tracks, parallel=parallel)


def starts(actions: Sequence[object]) -> list[str]:
    return [a.task_id for a in actions if isinstance(a, StartAttempt)]


def test_critical_path_first_then_priority_then_plan_order() -> None:
    plan = make_plan([
        {"id": "short", "estimate_s": 60.0},
        {"id": "long", "estimate_s": 60.0},
        {"id": "tail", "estimate_s": 600.0, "depends_on": ("long",)},
        {"id": "urgent", "estimate_s": 60.0, "priority": 5},
    ], parallel=1)
    sched = Scheduler(plan, 1)
    assert starts(sched.handle(Kick(), 0)) == ["long"]
    sched.handle(AttemptEnded("long", Outcome.SUCCESS), 1)
    assert sched.status("urgent") is S.QUEUED  # the slot waits for `tail`, which long's merge makes ready
    assert starts(sched.handle(MergeEnded("long", merged=True), 1)) == ["tail"]
    sched.handle(AttemptEnded("tail", Outcome.SUCCESS), 2)
    # nothing depends on tail: the next start is chosen among short/urgent, priority over plan order
    assert sched.status("urgent") is S.RUNNING


def test_a_result_keeps_its_slot_for_the_dependent_it_makes_ready_only_when_that_one_outranks_the_queue() -> None:
    plan = make_plan([
        {"id": "link1", "estimate_s": 600.0},
        {"id": "short", "estimate_s": 60.0},
        {"id": "link2", "estimate_s": 600.0, "depends_on": ("link1",)},
        {"id": "big", "estimate_s": 5000.0},
        {"id": "after-big", "estimate_s": 60.0, "depends_on": ("big",)},
    ], parallel=1)
    sched = Scheduler(plan, 1)
    assert starts(sched.handle(Kick(), 0)) == ["big"]
    assert starts(sched.handle(AttemptEnded("big", Outcome.SUCCESS), 1)) == ["link1"]  # after-big ranks lower
    sched.handle(MergeEnded("big", merged=True), 1)
    assert starts(sched.handle(AttemptEnded("link1", Outcome.SUCCESS), 2)) == []  # kept for link2
    assert starts(sched.handle(MergeEnded("link1", merged=False, conflicts=("x",)), 2)) == ["link1"]  # a retry


def test_priority_mode_strict_starts_the_urgent_task_before_the_critical_path() -> None:
    specs: list[dict[str, object]] = [
        {"id": "long", "estimate_s": 60.0},
        {"id": "tail", "estimate_s": 600.0, "depends_on": ("long",)},
        {"id": "urgent", "estimate_s": 60.0, "priority": 100},
    ]
    assert starts(Scheduler(make_plan(specs, parallel=1), 1).handle(Kick(), 0)) == ["long"]  # tie-breaker only
    strict = replace(make_plan(specs, parallel=1), priority_mode="strict")
    assert starts(Scheduler(strict, 1).handle(Kick(), 0)) == ["urgent"]  # priority first
    started = simulate(strict, 1).starts
    assert sorted(started, key=lambda t: started[t]) == ["urgent", "long", "tail"]  # and `orchard plan` says so


def test_parallel_and_agent_limits() -> None:
    plan = make_plan([{"id": f"t{i}", "agent": "slow" if i < 4 else "a"} for i in range(8)],
                     parallel=3, agents={"a": None, "slow": 1})
    sched = Scheduler(plan, 3)
    started = starts(sched.handle(Kick(), 0))
    assert len(started) == 3
    assert sum(1 for t in started if plan.task(t).agent == "slow") == 1


def test_failure_blocks_only_descendants_and_retries_are_counted() -> None:
    plan = make_plan([
        {"id": "a", "retries": 1},
        {"id": "b", "depends_on": ("a",)},
        {"id": "c", "depends_on": ("b",)},
        {"id": "free"},
    ])
    sched = Scheduler(plan, 4)
    sched.handle(Kick(), 0)
    out = sched.handle(AttemptEnded("a", Outcome.VERIFY_FAILED), 1)
    assert StartAttempt("a", 2, "a") in out  # one retry
    out = sched.handle(AttemptEnded("a", Outcome.AGENT_ERROR), 2)
    assert sched.status("a") is S.FAILED
    assert sched.status("b") is S.BLOCKED and sched.status("c") is S.BLOCKED
    assert sched.status("free") is S.RUNNING
    sched.handle(AttemptEnded("free", Outcome.SUCCESS), 3)
    out = sched.handle(MergeEnded("free", merged=True), 4)
    assert RunDone(complete=True) in out


def test_a_lost_machine_runs_the_attempt_again_using_no_retry_until_a_bound() -> None:
    sched = Scheduler(make_plan([{"id": "a", "retries": 0}]), 1)
    sched.handle(Kick(), 0)
    for number in (2, 3):  # lost twice: run again each time, though the task has no retry
        out = sched.handle(AttemptEnded("a", Outcome.LOST), number)
        assert StartAttempt("a", number, "a") in out
    out = sched.handle(AttemptEnded("a", Outcome.LOST), 4)  # a task that kills its machines does not loop
    assert sched.status("a") is S.FAILED and not starts(out)
    assert any(isinstance(a, StatusChanged) and a.reason.startswith("crashed: its machine was lost 3 times")
               for a in out)


def test_auth_failure_is_not_retried() -> None:
    sched = Scheduler(make_plan([{"id": "a", "retries": 3}]), 1)
    sched.handle(Kick(), 0)
    sched.handle(AttemptEnded("a", Outcome.AUTH), 1)
    assert sched.status("a") is S.FAILED


def test_merges_are_serialized_and_conflict_retries_then_ends_conflict() -> None:
    plan = make_plan([{"id": "x", "retries": 1}, {"id": "y", "retries": 0}])
    sched = Scheduler(plan, 2)
    sched.handle(Kick(), 0)
    assert [a for a in sched.handle(AttemptEnded("x", Outcome.SUCCESS), 1) if isinstance(a, StartMerge)]
    assert not [a for a in sched.handle(AttemptEnded("y", Outcome.SUCCESS), 1) if isinstance(a, StartMerge)]
    out = sched.handle(MergeEnded("x", merged=False, conflicts=("f.txt",)), 2)
    assert StartMerge("y") in out and StartAttempt("x", 2, "a") in out
    reasons = [a.reason for a in out if isinstance(a, StatusChanged) and a.task_id == "x"]
    assert any("f.txt" in r for r in reasons)
    out = sched.handle(MergeEnded("y", merged=False, conflicts=("g.txt",)), 3)
    assert sched.status("y") is S.CONFLICT


def test_a_merge_git_could_not_make_fails_the_task_without_a_retry_of_its_agent() -> None:
    plan = make_plan([{"id": "x", "retries": 3}, {"id": "child", "depends_on": ("x",)}])
    sched = Scheduler(plan, 2)
    sched.handle(Kick(), 0)
    sched.handle(AttemptEnded("x", Outcome.SUCCESS), 1)
    out = sched.handle(MergeEnded("x", merged=False, error="git error while merging: locked"), 2)
    assert not starts(out) and sched.status("x") is S.FAILED and sched.status("child") is S.BLOCKED
    assert [a.reason for a in out if isinstance(a, StatusChanged) and a.task_id == "x"] == [
        "git error while merging: locked"]
    assert sched.tasks["x"].failures == 0  # no retry used: the agent's work was not at fault


def test_tracks_run_one_at_a_time_in_order() -> None:
    plan = make_plan([{"id": "a2"}, {"id": "a1", "retries": 0}, {"id": "other"}], tracks={"t": ("a1", "a2")})
    sched = Scheduler(plan, 4)
    assert set(starts(sched.handle(Kick(), 0))) == {"a1", "other"}
    sched.handle(AttemptEnded("a1", Outcome.AGENT_ERROR), 1)  # a failed track member still frees the track
    assert sched.status("a1") is S.FAILED and sched.status("a2") is S.RUNNING


def test_overlapping_files_never_active_together() -> None:
    plan = make_plan([{"id": "a", "files": ("src/**",)}, {"id": "b", "files": ("src/x.py",)}, {"id": "c"}])
    sched = Scheduler(plan, 4)
    assert set(starts(sched.handle(Kick(), 0))) == {"a", "c"}
    sched.handle(AttemptEnded("a", Outcome.SUCCESS), 1)
    assert sched.status("b") is S.QUEUED  # a still holds its files while merging
    out = sched.handle(MergeEnded("a", merged=True), 2)
    assert StartAttempt("b", 1, "a") in out


def test_rate_limit_pauses_agent_without_using_a_retry() -> None:
    plan = make_plan([{"id": "a", "retries": 0}, {"id": "b"}], parallel=1)
    sched = Scheduler(plan, 1)
    sched.handle(Kick(), 0)
    out = sched.handle(AttemptEnded("a", Outcome.RATE_LIMITED, resume_at=100.0), 5)
    assert sched.status("a") is S.PAUSED and sched.status("b") is S.PAUSED
    assert not starts(out) and sched.next_wakeup() == 100.0
    out = sched.handle(Kick(), 100.0)
    assert starts(out) == ["a"] and sched.tasks["a"].failures == 0


def test_stop_drains_and_cancel_cancels_waiting() -> None:
    plan = make_plan([{"id": "a"}, {"id": "b"}, {"id": "c", "depends_on": ("a",)}], parallel=1)
    sched = Scheduler(plan, 1)
    sched.handle(Kick(), 0)
    sched.handle(Stop(), 1)
    sched.handle(AttemptEnded("a", Outcome.SUCCESS), 2)
    out = sched.handle(MergeEnded("a", merged=True), 3)
    assert not starts(out) and RunDone(complete=False, reason="interrupted") in out
    sched2 = Scheduler(plan, 1)
    sched2.handle(Kick(), 0)
    sched2.handle(Cancel(), 1)
    assert sched2.status("b") is S.CANCELLED and sched2.status("c") is S.CANCELLED
    assert sched2.status("a") is S.RUNNING


def test_verify_status_and_restore() -> None:
    plan = make_plan([{"id": "a"}, {"id": "b", "depends_on": ("a",)}, {"id": "c"}])
    sched = Scheduler(plan, 4, restored={"a": Restored(S.MERGED, attempts=1), "c": Restored(S.RUNNING, attempts=2)})
    out = sched.handle(Kick(), 0)
    assert set(starts(out)) == {"b", "c"}
    assert StartAttempt("c", 3, "a") in out
    sched.handle(VerifyStarted("b"), 1)
    assert sched.status("b") is S.VERIFYING


def test_graph_helpers() -> None:
    assert [format_cycle(c) for c in find_cycles(["a", "b", "c"], {"a": ["c"], "b": ["a"], "c": ["b"]})] == [
        "a → c → b → a"]
    assert globs_overlap("src/*.py", "src/a.py") and not globs_overlap("src/a.py", "docs/a.py")
    assert globs_overlap("src", "src/x/y.py") and not globs_overlap("a/x.py", "a/y.py")
    plan = make_plan([{"id": "a", "estimate_s": 5.0}, {"id": "b", "depends_on": ("a",), "estimate_s": 7.0},
                      {"id": "c", "estimate_s": 1.0}])
    assert waves(plan) == [["a", "c"], ["b"]]
    cp = critical_path(plan)
    assert cp.tasks == ("a", "b") and cp.length_s == 12.0
    sim = simulate(plan, parallel=2)
    assert sim.makespan_s == 12.0 and sim.complete


# ---- properties ------------------------------------------------------------------------------------------------
@st.composite
def random_plans(draw: st.DrawFn) -> tuple[Plan, int, int]:
    n = draw(st.integers(1, 25))
    seed = draw(st.integers(0, 10_000))
    rng = random.Random(seed)
    specs: list[dict[str, object]] = []
    for i in range(n):
        deps = tuple(f"t{j}" for j in range(i) if rng.random() < 0.15)
        files = (f"f{rng.randrange(4)}",) if rng.random() < 0.3 else ()
        specs.append({"id": f"t{i}", "depends_on": deps, "files": files, "retries": rng.randrange(3),
                      "estimate_s": float(rng.randrange(1, 50)), "agent": rng.choice(["a", "b"])})
    parallel = draw(st.integers(1, 6))
    return make_plan(specs, parallel=parallel, agents={"a": None, "b": 2}), parallel, seed


@given(random_plans())
@settings(max_examples=150, deadline=None)
def test_properties_hold_under_random_outcomes(case: tuple[Plan, int, int]) -> None:
    plan, parallel, seed = case
    rng = random.Random(seed)
    sched = Scheduler(plan, parallel)
    running: set[str] = set()
    merging: list[str] = []
    failed_for_good: set[str] = set()
    events: list[object] = [Kick()]
    now = 0.0
    for _ in range(10_000):
        if not events:
            if merging:
                tid = merging.pop(0)
                events.append(MergeEnded(tid, merged=rng.random() < 0.85, conflicts=("f",)))
            elif running:
                tid = rng.choice(sorted(running))
                running.discard(tid)
                outcome = Outcome.SUCCESS if rng.random() < 0.7 else rng.choice(list(Outcome))
                if outcome is Outcome.RATE_LIMITED:
                    events.append(AttemptEnded(tid, outcome, resume_at=now + 1))
                else:
                    events.append(AttemptEnded(tid, outcome))
            elif sched.next_wakeup() is not None:
                now = max(now, sched.next_wakeup() or now)
                events.append(Kick())
            else:
                break
        now += 0.1
        for action in sched.handle(events.pop(0), now):  # type: ignore[arg-type]
            if isinstance(action, StartAttempt):
                task = plan.task(action.task_id)
                assert all(sched.status(d) is S.MERGED for d in task.depends_on)
                running.add(action.task_id)
            elif isinstance(action, StartMerge):
                merging.append(action.task_id)
            elif isinstance(action, StatusChanged) and action.status in (S.FAILED, S.CONFLICT):
                failed_for_good.add(action.task_id)
        assert len(running) <= parallel
        assert sum(1 for t in running if plan.task(t).agent == "b") <= 2
        active = running | set(merging)
        for t in active:
            for u in active:
                if t != u and plan.task(t).files and plan.task(t).files == plan.task(u).files:
                    raise AssertionError(f"{t} and {u} share files while both active")
    assert sched.done
    assert all(s.status.terminal for s in sched.tasks.values())
    for each in plan.tasks:
        if sched.status(each.id) is S.BLOCKED:
            assert any(sched.status(d) in (S.FAILED, S.CONFLICT, S.BLOCKED) for d in each.depends_on)


def test_rate_limit_without_reset_time_backs_off_exponentially_up_to_a_cap() -> None:
    plan = make_plan([{"id": "a"}], parallel=1)
    sched = Scheduler(plan, 1)
    sched.handle(Kick(), 0)
    now = 0.0
    waits = []
    for _ in range(8):
        sched.handle(AttemptEnded("a", Outcome.RATE_LIMITED), now)
        wake = sched.next_wakeup()
        assert wake is not None
        waits.append(wake - now)
        now = wake
        assert starts(sched.handle(Kick(), now)) == ["a"]
    assert waits[:4] == [60.0, 120.0, 240.0, 480.0] and max(waits) == 1800.0
    assert sched.tasks["a"].failures == 0
    sched.handle(AttemptEnded("a", Outcome.SUCCESS), now)
    sched.handle(MergeEnded("a", merged=True), now)
    assert sched.status("a") is S.MERGED


def test_paused_agent_hands_queued_tasks_to_its_fallback() -> None:
    agents = {"main": AgentSpec("main", "command", None, {"fallback": ("spare",)}),
              "spare": AgentSpec("spare", "command")}
    tasks = [Task(id=t, prompt="p", agent="main") for t in ("a", "b")]
    plan = Plan.build(tasks, agents, parallel=2)
    sched = Scheduler(plan, 1)
    sched.handle(Kick(), 0)
    out = sched.handle(AttemptEnded("a", Outcome.RATE_LIMITED, resume_at=500.0), 1)
    started = [a for a in out if isinstance(a, StartAttempt)]
    assert started and started[0].agent == "spare"
    paused = [a for a in out if isinstance(a, StatusChanged) and a.status is S.PAUSED]
    assert paused and paused[0].until == 500.0


def test_budgets_stop_new_work_and_cap_attempts() -> None:
    tasks = [Task(id="a", prompt="p", agent="a", retries=5, budget_usd=1.0), Task(id="b", prompt="p", agent="a"),
             Task(id="c", prompt="p", agent="a")]
    plan = Plan.build(tasks, {"a": AgentSpec("a", "command")}, parallel=1, budget_usd=3.0)
    sched = Scheduler(plan, 1)
    out = sched.handle(Kick(), 0)
    assert StartAttempt("a", 1, "a", 1.0) in out
    out = sched.handle(AttemptEnded("a", Outcome.AGENT_ERROR, cost_usd=0.6), 1)
    second = next(a for a in out if isinstance(a, StartAttempt))
    assert (second.task_id, second.attempt, second.agent) == ("a", 2, "a") and second.budget_usd == pytest.approx(0.4)
    sched.handle(AttemptEnded("a", Outcome.AGENT_ERROR, cost_usd=0.5), 2)
    assert sched.status("a") is S.FAILED  # over its own budget, retries left or not
    sched.handle(AttemptEnded("b", Outcome.SUCCESS, cost_usd=2.0), 3)  # the run has now spent 3.1
    out = sched.handle(MergeEnded("b", merged=True), 4)
    assert not starts(out) and RunDone(complete=False, reason="budget_exhausted") in out
    assert sched.status("c") is S.QUEUED


_PARTS = st.sampled_from(["src", "src/a", "src/a/x.py", "src/b.py", "docs", "docs/*.md", "src/*", "src/a/*",
                          "*.py", "src/**", "docs/i?.md", "docs/index.md", "src/b", "s*", "lib/[ab].py", "lib/a.py"])


@given(st.lists(st.lists(_PARTS, min_size=0, max_size=3), min_size=1, max_size=12))
@settings(max_examples=300, deadline=None)
def test_indexed_file_conflicts_equal_comparing_every_pair(files: list[list[str]]) -> None:
    plan = make_plan([{"id": f"t{i}", "files": tuple(f)} for i, f in enumerate(files)])
    brute: dict[str, set[str]] = {}
    for a in plan.tasks:
        for b in plan.tasks:
            if a.id != b.id and any(globs_overlap(x, y) for x in a.files for y in b.files):
                brute.setdefault(a.id, set()).add(b.id)
    assert {k: set(v) for k, v in file_conflicts(plan).items()} == brute


def test_no_new_attempt_while_parallel_results_wait_to_merge() -> None:
    """Backpressure: results waiting for the one-at-a-time merge queue hold back new attempts."""
    plan = make_plan([{"id": f"t{i}"} for i in range(6)], parallel=2)
    sched = Scheduler(plan, 2)
    assert starts(sched.handle(Kick(), 0)) == ["t0", "t1"]
    out = sched.handle(AttemptEnded("t0", Outcome.SUCCESS), 1)
    assert StartMerge("t0") in out and starts(out) == ["t2"]  # the merge in flight does not count
    assert starts(sched.handle(AttemptEnded("t1", Outcome.SUCCESS), 2)) == ["t3"]  # one waiting: room left
    assert starts(sched.handle(AttemptEnded("t2", Outcome.SUCCESS), 3)) == []  # two waiting: hold back
    assert sched.status("t4") is S.QUEUED
    out = sched.handle(MergeEnded("t0", merged=True), 4)
    assert StartMerge("t1") in out and starts(out) == ["t4"]  # t1 leaves the waiting line for the merge


def test_a_merge_killed_by_a_hard_stop_leaves_the_task_merging_for_the_next_session() -> None:
    plan = make_plan([{"id": "a", "retries": 0}, {"id": "b", "depends_on": ("a",)}], parallel=1)
    sched = Scheduler(plan, 1)
    sched.handle(Kick(), 0)
    assert StartMerge("a") in sched.handle(AttemptEnded("a", Outcome.SUCCESS), 1)
    sched.handle(Stop(), 2)
    out = sched.handle(MergeEnded("a", merged=False, interrupted=True), 3)
    assert sched.status("a") is S.MERGING and sched.tasks["a"].failures == 0  # neither a conflict nor a retry
    assert sched.status("b") is S.PENDING and not starts(out)
    assert RunDone(complete=False, reason="interrupted") in out
