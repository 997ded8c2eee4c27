"""Dependency-graph checks: unknown and self dependencies, cycles (found by `core.graph`), track order.

Everything is linear in tasks + edges and iterative, so 10,000-task plans check in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

from orchard.core.graph import find_cycles, format_cycle
from orchard.plan.fields import did_you_mean
from orchard.plan.raw import Problems

_SUGGEST_LIMIT = 50  # did-you-mean for unknown dependencies costs O(tasks); cap it for huge broken plans


def clean_dependencies(
    order: Sequence[str], deps: Mapping[str, Sequence[str]], file_of: Mapping[str, str], problems: Problems
) -> dict[str, tuple[str, ...]]:
    """Report unknown and self dependencies; return the known ones of each task."""
    known = set(order)
    clean: dict[str, tuple[str, ...]] = {}
    suggested = 0
    for task in order:
        kept: list[str] = []
        for dep in deps.get(task, ()):
            if dep == task:
                problems.add(file_of[task], "a task cannot depend on itself", task, "depends_on")
            elif dep not in known:
                guess = did_you_mean(dep, order) if suggested < _SUGGEST_LIMIT else None
                suggested += 1
                hint = f" (did you mean '{guess}'?)" if guess else ""
                problems.add(file_of[task], f"depends on unknown task '{dep}'{hint}", task, "depends_on")
            else:
                kept.append(dep)
        clean[task] = tuple(kept)
    return clean


def dependents(order: Sequence[str], deps: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The reverse edges: for each task, the tasks that depend on it, in plan order."""
    out: dict[str, list[str]] = {task: [] for task in order}
    for task in order:
        for dep in deps.get(task, ()):
            out[dep].append(task)
    return out


def check_cycles(
    order: Sequence[str], deps: Mapping[str, Sequence[str]], file_of: Mapping[str, str], problems: Problems
) -> bool:
    """Report `dependency cycle: a → b → a` (a dependency before its dependents); True if any."""
    cycles = find_cycles(order, dependents(order, deps))
    for cycle in cycles:
        problems.add(file_of[cycle[0]], f"dependency cycle: {format_cycle(cycle)}", cycle[0], "depends_on")
    return bool(cycles)


def check_track_order(
    tracks: Mapping[str, Sequence[str]],
    track_file: Mapping[str, str],
    deps: Mapping[str, Sequence[str]],
    problems: Problems,
) -> bool:
    """Report tasks listed before one of their own dependencies in the same track; True if any."""
    bad = False
    for track, members in tracks.items():
        position = {task: i for i, task in enumerate(members)}
        for i, task in enumerate(members):
            for dep in deps.get(task, ()):
                if position.get(dep, -1) > i:
                    bad = True
                    message = f"track '{track}' lists '{task}' before its dependency '{dep}'"
                    problems.add(track_file[track], message, task, "track")
    return bad


def check_track_cycles(
    order: Sequence[str],
    deps: Mapping[str, Sequence[str]],
    tracks: Mapping[str, Sequence[str]],
    file_of: Mapping[str, str],
    problems: Problems,
) -> None:
    """Report indirect contradictions: cycles through dependencies plus track order edges."""
    succ = dependents(order, deps)
    for members in tracks.values():
        for before, after in pairwise(members):
            succ[before].append(after)
    for cycle in find_cycles(order, succ):
        message = f"track order contradicts dependencies: {format_cycle(cycle)}"
        problems.add(file_of[cycle[0]], message, cycle[0], "track")
