"""The gated merge train's decisions (`core.train`), against a model of the project's check: batches, bisection,
who is blamed, how many checks it takes, and that the integration branch only ever holds a passing tree."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from orchard.core.train import Check, Train, Verdict

Fails = Callable[[frozenset[str]], bool]


def drive(train: Train, arrivals: list[list[str]], fails: Fails) -> tuple[list[str], list[str], list[frozenset[str]]]:
    """Run the train to the end: `arrivals[i]` results join before the i-th check. Returns what merged (in order),
    what failed, and every tree the integration branch pointed at."""
    merged: list[str] = []
    failed: list[str] = []
    trees = [frozenset[str]()]
    step = 0
    while True:
        for task_id in arrivals[step] if step < len(arrivals) else []:
            train.add(task_id)
        step += 1
        check = train.next_check()
        if check is None:
            if step >= len(arrivals):
                break
            continue
        candidate = frozenset(merged) | set(check.tasks)
        verdict: Verdict = train.finished(not fails(candidate))
        merged += verdict.merged
        failed += verdict.failed
        if verdict.merged:
            trees.append(frozenset(merged))
    assert train.idle
    return merged, failed, trees


def culprits(bad: set[str]) -> Fails:
    return lambda tree: bool(tree & bad)


def test_a_green_batch_merges_whole_in_one_check() -> None:
    train = Train(batch=8)
    merged, failed, _ = drive(train, [[f"t{i}" for i in range(8)]], culprits(set()))
    assert merged == [f"t{i}" for i in range(8)] and failed == [] and train.checks == 1


def test_16_good_results_and_one_culprit_take_at_most_9_checks_not_17() -> None:
    tasks = [f"t{i:02d}" for i in range(17)]
    train = Train(batch=8)
    merged, failed, _ = drive(train, [tasks], culprits({"t12"}))
    assert failed == ["t12"] and merged == [t for t in tasks if t != "t12"]
    assert train.checks <= 9, train.checks


def test_a_half_whose_sibling_passed_fails_without_a_check_of_its_own() -> None:
    train = Train(batch=4)
    assert train.next_check() is None
    for t in ("a", "b", "c", "d"):
        train.add(t)
    first = train.next_check()
    assert first is not None and first.tasks == ("a", "b", "c", "d")
    assert train.finished(False) == Verdict()  # nobody blamed yet
    # the failed batch is split: ("a", "b") first
    left = train.next_check()
    assert left is not None and left.tasks == ("a", "b")
    assert train.finished(True).merged == ("a", "b")
    # ("c", "d") on the new tip is the failed tree again: split without a check, then "c" alone
    single = train.next_check()
    assert single is not None and single.tasks == ("c",)
    # tip + a + b + c passed, tip + a + b + c + d failed: "d" is blamed with no check of its own
    assert train.finished(True) == Verdict(merged=("c",), failed=("d",), inferred=True)
    assert train.checks == 3 and train.next_check() is None and train.idle


def test_a_failing_first_half_sends_the_second_back_to_be_batched_with_what_waits() -> None:
    train = Train(batch=4)
    for t in ("a", "b", "c", "d"):
        train.add(t)
    assert train.next_check() is not None
    train.finished(False)
    for t in ("e", "f"):
        train.add(t)
    left = train.next_check()
    assert left is not None and left.tasks == ("a", "b")
    assert train.finished(False) == Verdict()  # "c" and "d" are no longer known to fail
    assert list(train.waiting) == ["c", "d", "e", "f"]  # in queue order, ahead of the later results
    alone = train.next_check()
    assert alone is not None and alone.tasks == ("a",)
    assert train.finished(False) == Verdict(failed=("a",), inferred=False)  # failed alone
    assert list(train.waiting) == ["b", "c", "d", "e", "f"]  # nothing known of "b" either
    assert train.next_check() == Check(("b", "c", "d", "e"))


def test_a_result_dropped_for_a_conflict_voids_what_was_inferred() -> None:
    train = Train(batch=4)
    for t in ("a", "b", "c", "d"):
        train.add(t)
    assert train.next_check() is not None
    train.finished(False)
    assert train.next_check() is not None  # ("a", "b")
    assert train.finished(True, dropped=("b",)).merged == ("a",)
    again = train.next_check()
    assert again is not None and again.tasks == ("c", "d")  # another tree than the one that failed: checked


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 40), batch=st.integers(1, 10), data=st.data())
def test_every_result_merges_or_fails_once_and_the_branch_is_always_green(n: int, batch: int,
                                                                         data: st.DataObject) -> None:
    tasks = [f"t{i:02d}" for i in range(n)]
    bad = set(data.draw(st.sets(st.sampled_from(tasks), max_size=min(n, 4))))
    waves = data.draw(st.lists(st.integers(0, n), min_size=1, max_size=6))
    cuts = sorted({0, n, *waves})
    arrivals = [tasks[a:b] for a, b in itertools.pairwise(cuts)]
    merged, failed, trees = drive(Train(batch=batch), arrivals, culprits(bad))
    assert sorted(merged + failed) == tasks  # each exactly once
    assert set(failed) == bad  # a culprit fails; an innocent never does
    assert all(not (tree & bad) for tree in trees)  # never a failing tree on the integration branch
    assert merged == [t for t in tasks if t not in bad]  # in queue order


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 64), batch=st.integers(2, 16), data=st.data())
def test_one_culprit_costs_about_log2_of_the_batch_more_checks(n: int, batch: int, data: st.DataObject) -> None:
    tasks = [f"t{i:02d}" for i in range(n)]
    bad = data.draw(st.sampled_from(tasks))
    train = Train(batch=batch)
    drive(train, [tasks], culprits({bad}))
    batches = math.ceil((n - 1) / batch) + 1  # the culprit's batch, re-filled behind it
    assert train.checks <= batches + 2 * math.ceil(math.log2(batch)) + 1, (train.checks, n, batch)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 30), batch=st.integers(2, 10), data=st.data())
def test_two_changes_that_break_only_together_fail_the_later_one(n: int, batch: int, data: st.DataObject) -> None:
    """The semantic conflict: each passes alone, the pair fails; the one merged second is blamed."""
    tasks = [f"t{i:02d}" for i in range(n)]
    first, second = sorted(data.draw(st.sets(st.sampled_from(tasks), min_size=2, max_size=2)))
    merged, failed, trees = drive(Train(batch=batch), [tasks], lambda tree: {first, second} <= tree)
    assert failed == [second] and first in merged
    assert all(not {first, second} <= tree for tree in trees)
