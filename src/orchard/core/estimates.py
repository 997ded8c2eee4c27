"""Estimates learned from history: a task without a declared `estimate` takes the median duration of earlier
successful attempts of a task with its id in this repository, else of its agent's attempts on prompts of a similar
size, else the default. The critical-path order (`core.graph.ranks`) and `orchard plan`'s makespan use them.
Pure: the samples come from the store (`runtime.estimates`)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

from orchard.core.model import Plan

SIMILAR_SIZE = 2.0  # a prompt is "of a similar size" within this factor either way
MIN_SIMILAR = 3  # attempts on similar prompts needed before their median counts


@dataclass(frozen=True)
class Sample:
    """One earlier successful attempt: its task, agent, prompt length and how long it took."""

    task_id: str
    agent: str
    prompt_chars: int
    duration_s: float


def learned(plan: Plan, samples: Sequence[Sample]) -> tuple[Plan, dict[str, str]]:
    """The plan with learned estimates for its tasks without a declared one (none with `estimates: declared`), and
    for each such task where its estimate came from, in words."""
    if plan.estimates == "declared" or not samples:
        return plan, {}
    by_id: dict[str, list[float]] = {}
    for s in samples:
        by_id.setdefault(s.task_id, []).append(s.duration_s)
    tasks, said = list(plan.tasks), {}
    for i, t in enumerate(tasks):
        if t.estimated != "default":
            continue
        same = by_id.get(t.id, [])
        similar = [] if same else [s.duration_s for s in samples if s.agent == t.agent and _similar(s, len(t.prompt))]
        if same:
            said[t.id] = f"median of {len(same)} earlier attempt(s) of this task"
        elif len(similar) >= MIN_SIMILAR:
            said[t.id] = f"median of {len(similar)} attempts on {t.agent} with prompts of a similar size"
        else:
            continue
        tasks[i] = replace(t, estimate_s=round(statistics.median(same or similar), 1), estimated="history")
    if not said:
        return plan, {}
    return replace(plan, tasks=tuple(tasks), _index=MappingProxyType({t.id: t for t in tasks})), said


def _similar(sample: Sample, chars: int) -> bool:
    ratio = max(1, sample.prompt_chars) / max(1, chars)
    return 1 / SIMILAR_SIZE <= ratio <= SIMILAR_SIZE
