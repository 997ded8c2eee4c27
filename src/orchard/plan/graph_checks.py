"""Dependency-graph checks: unknown and self dependencies, cycles (iterative Tarjan), track order.

Everything is linear in tasks + edges and iterative, so 10,000-task plans check in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

from orchard.plan.fields import did_you_mean
from orchard.plan.raw import Problems

ARROW = " → "
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


def strongly_connected(order: Sequence[str], succ: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Components of more than one node (iterative Tarjan; no self loops expected)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in order:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(succ.get(root, ())))]
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(succ.get(nxt, ()))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = _pop_component(stack, on_stack, node)
                    if len(component) > 1:
                        found.append(component)
    return found


def _pop_component(stack: list[str], on_stack: set[str], node: str) -> list[str]:
    """Pop Tarjan's stack down to and including `node`."""
    component: list[str] = []
    while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
            return component


def cycle_in(component: Sequence[str], succ: Mapping[str, Sequence[str]], position: Mapping[str, int]) -> list[str]:
    """One closed cycle [a, b, …, a] inside a strongly connected component, starting at its earliest task."""
    members = set(component)
    start = min(component, key=position.__getitem__)
    path, seen = [start], {start: 0}
    while True:
        nxt = next(n for n in succ[path[-1]] if n in members)
        if nxt in seen:
            cycle = path[seen[nxt] :]
            break
        seen[nxt] = len(path)
        path.append(nxt)
    first = min(range(len(cycle)), key=lambda i: position[cycle[i]])
    cycle = cycle[first:] + cycle[:first]
    return [*cycle, cycle[0]]


def find_cycles(order: Sequence[str], succ: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One closed cycle per cyclic component, in plan order of their first task."""
    position = {task: i for i, task in enumerate(order)}
    cycles = [cycle_in(c, succ, position) for c in strongly_connected(order, succ)]
    return sorted(cycles, key=lambda cycle: position[cycle[0]])


def check_cycles(
    order: Sequence[str], deps: Mapping[str, Sequence[str]], file_of: Mapping[str, str], problems: Problems
) -> bool:
    """Report `dependency cycle: a → b → a` (a dependency before its dependents); True if any."""
    cycles = find_cycles(order, dependents(order, deps))
    for cycle in cycles:
        problems.add(file_of[cycle[0]], f"dependency cycle: {ARROW.join(cycle)}", cycle[0], "depends_on")
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
        message = f"track order contradicts dependencies: {ARROW.join(cycle)}"
        problems.add(file_of[cycle[0]], message, cycle[0], "track")
