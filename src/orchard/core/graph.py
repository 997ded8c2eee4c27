"""Graph rules over a plan: cycles (with their path), waves, critical path, and declared-file overlaps.

All iterative (no recursion) and close to linear in tasks + edges; file overlap is indexed by path prefix.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, TypeVar, cast

from orchard.core.model import Plan

_WILDCARD = re.compile(r"[*?\[]")  # what fnmatch treats specially
_T = TypeVar("_T")


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


def format_cycle(cycle: Sequence[str]) -> str:
    """`a → b → c → a`."""
    return " → ".join(cycle)


def order_edges(plan: Plan) -> dict[str, list[str]]:
    """Predecessors of each task: its dependencies plus its predecessor in its track."""
    preds: dict[str, list[str]] = {t.id: list(t.depends_on) for t in plan.tasks}
    for members in plan.tracks.values():
        for before, after in itertools.pairwise(members):
            if before not in preds[after]:
                preds[after].append(before)
    return preds


def _successors(preds: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The reverse edges, each list in input order of the successors; every node has an entry."""
    succs: dict[str, list[str]] = {node: [] for node in preds}
    for node, ps in preds.items():
        for p in ps:
            succs.setdefault(p, []).append(node)
    return succs


def _kahn(preds: Mapping[str, Sequence[str]], succs: Mapping[str, Sequence[str]]) -> list[str]:
    indegree = {node: len(ps) for node, ps in preds.items()}
    order = [node for node, d in indegree.items() if d == 0]
    i = 0
    while i < len(order):
        for s in succs[order[i]]:
            indegree[s] -= 1
            if indegree[s] == 0:
                order.append(s)
        i += 1
    return order


def _derived(plan: Plan, name: str, compute: Callable[[Plan], _T]) -> _T:
    """`compute(plan)`, worked out once per Plan: the preview, the simulated scheduler and the real one share it."""
    memo: dict[str, Any] = plan._derived
    if name not in memo:
        memo[name] = compute(plan)
    return cast(_T, memo[name])


@dataclass(frozen=True)
class _Edges:
    """Order edges (dependencies plus track order) both ways, and a topological order of the tasks."""

    preds: Mapping[str, Sequence[str]]
    succs: Mapping[str, Sequence[str]]
    order: Sequence[str]


def _edges(plan: Plan) -> _Edges:
    def compute(plan: Plan) -> _Edges:
        preds = order_edges(plan)
        succs = _successors(preds)
        return _Edges(preds, succs, _kahn(preds, succs))

    return _derived(plan, "edges", compute)


def waves(plan: Plan) -> list[list[str]]:
    """Group tasks by depth: wave 0 has no predecessors, wave n needs something from wave n-1."""
    edges = _edges(plan)
    depth: dict[str, int] = {}
    for node in edges.order:
        depth[node] = 1 + max((depth[p] for p in edges.preds[node]), default=-1)
    grouped: dict[int, list[str]] = defaultdict(list)
    for t in plan.tasks:
        grouped[depth[t.id]].append(t.id)
    return [grouped[d] for d in sorted(grouped)]


def ranks(plan: Plan) -> dict[str, float]:
    """Longest estimated path from each task (its own estimate included) to the end of the graph."""
    return dict(_derived(plan, "ranks", _ranks))


def _ranks(plan: Plan) -> dict[str, float]:
    edges = _edges(plan)
    rank: dict[str, float] = {}
    for node in reversed(edges.order):
        rank[node] = plan.task(node).estimate_s + max((rank[s] for s in edges.succs[node]), default=0.0)
    return rank


@dataclass(frozen=True)
class CriticalPath:
    """The chain of tasks with the longest total estimate, and that total in seconds."""

    tasks: tuple[str, ...]
    length_s: float


def critical_path(plan: Plan) -> CriticalPath:
    """Follow the highest-ranked successor from the highest-ranked root."""
    if not plan.tasks:
        return CriticalPath((), 0.0)
    rank: dict[str, float] = _derived(plan, "ranks", _ranks)
    edges = _edges(plan)
    roots = [t.id for t in plan.tasks if not edges.preds[t.id]]
    chain: list[str] = [max(roots, key=lambda n: rank[n])]
    while edges.succs[chain[-1]]:
        chain.append(max(edges.succs[chain[-1]], key=lambda n: rank[n]))
    return CriticalPath(tuple(chain), rank[chain[0]])


def _literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard (all of it when it has none)."""
    wildcard = _WILDCARD.search(pattern)
    return pattern if wildcard is None else pattern[: wildcard.start()]


def globs_overlap(a: str, b: str) -> bool:
    """Whether two declared-file globs may name a common path (conservative: may say yes when unsure)."""
    a, b = a.rstrip("/"), b.rstrip("/")
    if a == b:
        return True
    pa, pb = _literal_prefix(a), _literal_prefix(b)
    wild_a, wild_b = pa != a, pb != b
    # fnmatch against a pattern without wildcards is plain equality (checked above); skipping it spares compiling
    # every literal path into a regular expression.
    if (wild_b and fnmatchcase(a, b)) or (wild_a and fnmatchcase(b, a)):
        return True
    if a.startswith(b + "/") or b.startswith(a + "/"):
        return True  # a directory and something inside it
    if wild_a and wild_b:
        return pa.startswith(pb) or pb.startswith(pa)
    return False


def _ancestors(path: str) -> Iterator[str]:
    """`a/b/c.py` → `a`, `a/b`: the directories a path lies in."""
    for i, ch in enumerate(path):
        if ch == "/":
            yield path[:i]


def _starting_with(sorted_keys: list[str], prefix: str) -> list[str]:
    """The keys that start with `prefix` (a contiguous run of the sorted list)."""
    lo = bisect.bisect_left(sorted_keys, prefix)
    hi = bisect.bisect_left(sorted_keys, prefix + "\U0010ffff")
    return sorted_keys[lo:hi]


def file_conflicts(plan: Plan) -> dict[str, frozenset[str]]:
    """For each task with declared files, the other tasks whose files overlap with it.

    Indexed, not pairwise: literal paths meet by equality or as directory and content; a wildcard pattern can only
    meet paths and patterns that start with its literal prefix, or the directories that prefix lies in. Each such
    candidate is then judged by `globs_overlap`, so the result equals comparing every pair.
    """
    return dict(_derived(plan, "file_conflicts", _file_conflicts))


def _file_conflicts(plan: Plan) -> dict[str, frozenset[str]]:
    literal: dict[str, set[str]] = defaultdict(set)
    wild: list[tuple[str, str, str]] = []  # (task, pattern, literal prefix)
    for t in plan.tasks:
        for raw in t.files:
            pattern = raw.rstrip("/")
            prefix = _literal_prefix(pattern)
            if prefix == pattern:
                literal[pattern].add(t.id)
            else:
                wild.append((t.id, pattern, prefix))
    found: dict[str, set[str]] = defaultdict(set)

    def link(a: str, owners: Iterable[str]) -> None:
        for b in owners:
            if a != b:
                found[a].add(b)
                found[b].add(a)

    for path, owners in literal.items():
        for task in owners:
            link(task, owners)
            for directory in _ancestors(path):
                link(task, literal.get(directory, ()))
    paths = sorted(literal)
    by_prefix: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for task, pattern, prefix in wild:
        by_prefix[prefix].append((task, pattern))
    prefixes = sorted(by_prefix)
    for task, pattern, prefix in wild:
        for path in _starting_with(paths, prefix):
            if globs_overlap(pattern, path):
                link(task, literal[path])
        for directory in _ancestors(prefix):
            link(task, literal.get(directory, ()))
        for other_prefix in _starting_with(prefixes, prefix):
            link(task, (other for other, other_pattern in by_prefix[other_prefix]
                        if globs_overlap(pattern, other_pattern)))
    return {k: frozenset(v) for k, v in found.items()}


def overlapping_pairs(plan: Plan) -> list[tuple[str, str]]:
    """Each unordered pair of tasks whose declared files overlap, in plan order."""
    conflicts: dict[str, frozenset[str]] = _derived(plan, "file_conflicts", _file_conflicts)
    position = {t.id: i for i, t in enumerate(plan.tasks)}
    pairs = {(a, b) for a, others in conflicts.items() for b in others if position[a] < position[b]}
    return sorted(pairs, key=lambda p: (position[p[0]], position[p[1]]))
