"""Coupling between tasks: the evidence (shared files, imports, co-change) for each pair, whether the plan already
handles the pair, and the fix suggested when it does not.

Pairs are found through indexes (file → tasks), never by comparing every pair of a big plan.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from orchard.analysis.history import History, co_changes
from orchard.analysis.imports import ImportGraph
from orchard.analysis.model import WEIGHTS, Evidence, FileRef, Fix, How, Kind, Risk, TaskFiles
from orchard.analysis.tree import Tree, is_test_file
from orchard.core.graph import file_conflicts, globs_overlap, order_edges
from orchard.core.model import Plan

Pair = tuple[str, str]


def find_risks(plan: Plan, files: Sequence[TaskFiles], tree: Tree, graph: ImportGraph,
               history: History) -> tuple[list[Risk], list[Risk]]:
    """(risks ranked highest first, pairs the plan already covers in plan order) of the coupled task pairs."""
    position = {t.id: i for i, t in enumerate(plan.tasks)}
    by_task = {tf.task: tf for tf in files}
    concrete = {tf.task: touched(tf.files, tree) for tf in files}
    # Imports and co-change start only from tracked files a prompt names itself: a paired test is a guess, and a
    # guess followed through imports or history couples everything (docs/analysis.md has the figures).
    direct = {tf.task: touched([r for r in tf.files if r.how is not How.PAIRED], tree) & tree.files for tf in files}
    found: dict[Pair, set[Evidence]] = defaultdict(set)

    def add(a: str, b: str, evidence: Evidence) -> None:
        if position[a] > position[b]:
            a, b, evidence = b, a, _flipped(evidence)
        found[(a, b)].add(evidence)

    for a, b, ev in _overlaps(plan, by_task):
        add(a, b, ev)
    for a, b, ev in _import_edges(direct, concrete, graph):
        add(a, b, ev)
    for a, b, ev in _co_changes(direct, concrete, history):
        add(a, b, ev)
    return _classify(plan, by_task, found) if found else ([], [])


def _flipped(evidence: Evidence) -> Evidence:
    """The same evidence seen from the other task: its two files swapped."""
    return dataclasses.replace(evidence, files=(evidence.files[1], evidence.files[0]))


def touched(refs: Iterable[FileRef], tree: Tree) -> frozenset[str]:
    """The tracked files a task's entries name (globs and directories expanded); new files as written."""
    out: set[str] = set()
    for ref in refs:
        out.update(tree.expand(ref.path) or ([] if ref.pattern else [ref.path]))
    return frozenset(out)


def work_order(plan: Plan, preds: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each task's place in a topological order of `preds` (`core.graph.order_edges`: dependencies and tracks),
    ties broken by plan order."""
    position = {t.id: i for i, t in enumerate(plan.tasks)}
    succs: dict[str, list[str]] = defaultdict(list)
    for task, before in preds.items():
        for p in before:
            succs[p].append(task)
    indegree = {task: len(set(before)) for task, before in preds.items()}
    ready = [(position[t], t) for t, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order: dict[str, int] = {}
    while ready:
        _, task = heapq.heappop(ready)
        order[task] = len(order)
        for s in dict.fromkeys(succs[task]):
            indegree[s] -= 1
            if indegree[s] == 0:
                heapq.heappush(ready, (position[s], s))
    return order


def _overlaps(plan: Plan, by_task: Mapping[str, TaskFiles]) -> Iterable[tuple[str, str, Evidence]]:
    """Pairs whose files (declared or inferred) overlap, by the scheduler's own rule for declared files."""
    surrogate = plan  # when nothing was inferred: its conflicts are worked out once and shared with the preview
    if any(by_task[t.id].paths != t.files for t in plan.tasks):
        effective = [dataclasses.replace(t, files=by_task[t.id].paths) for t in plan.tasks]
        surrogate = Plan.build(effective, plan.agents, source=plan.source)
    position = {t.id: i for i, t in enumerate(plan.tasks)}
    for a, others in file_conflicts(surrogate).items():
        for b in others:
            # both declared: the scheduler keeps them apart, and `orchard plan` lists them as file overlaps
            if position[a] < position[b] and not (by_task[a].declared and by_task[b].declared):
                for x in by_task[a].files:
                    for y in by_task[b].files:
                        # two guesses meeting (a test each task may touch) are no evidence
                        if (x.how is not How.PAIRED or y.how is not How.PAIRED) and globs_overlap(x.path, y.path):
                            yield a, b, _overlap_evidence(a, x, b, y)


def _overlap_evidence(a: str, x: FileRef, b: str, y: FileRef) -> Evidence:
    """`both mention src/api.py`, `both declare …`, each side with how it came to the file, or, when one side
    only has it as a paired test or implementation, the test and what it tests (once, from either side)."""
    if x.how is How.PAIRED or y.how is How.PAIRED:
        mine, theirs = (x.via, y.path) if x.how is How.PAIRED else (x.path, y.via)
        test, subject = (mine, theirs) if is_test_file(mine) else (theirs, mine)
        return Evidence(Kind.TESTS, f"{test} tests {subject}", (mine, theirs))
    if x.path == y.path and x.how == y.how and x.how in (How.MENTIONED, How.DECLARED) and not (x.via or y.via):
        verb = "mention" if x.how is How.MENTIONED else "declare"
        return Evidence(Kind.OVERLAP, f"both {verb} {x.path}", (x.path, y.path))
    if x.path == y.path:
        return Evidence(Kind.OVERLAP, f"both touch {x.path} ({a}: {x.reason()}; {b}: {y.reason()})", (x.path, y.path))
    return Evidence(Kind.OVERLAP, f"{a}'s {x.path} ({x.reason()}) overlaps {b}'s {y.path} ({y.reason()})",
                    (x.path, y.path))


def _owners(concrete: Mapping[str, frozenset[str]]) -> dict[str, list[str]]:
    owners: dict[str, list[str]] = defaultdict(list)
    for task, paths in concrete.items():
        for path in paths:
            owners[path].append(task)
    return owners


def _import_edges(direct: Mapping[str, frozenset[str]], concrete: Mapping[str, frozenset[str]],
                  graph: ImportGraph) -> Iterable[tuple[str, str, Evidence]]:
    """Pairs where a file one task names imports a file the other names (and neither touches both)."""
    owners = _owners(direct)
    graph.load(owners)
    for x in sorted(owners):
        for y in sorted(graph.imports(x)):
            for a in owners[x]:
                for b in owners.get(y, ()):
                    if a != b and y not in concrete[a] and x not in concrete[b]:
                        yield a, b, Evidence(Kind.IMPORT, f"{x} imports {y}", (x, y))


def _co_changes(direct: Mapping[str, frozenset[str]], concrete: Mapping[str, frozenset[str]],
               history: History) -> Iterable[tuple[str, str, Evidence]]:
    """Pairs where a file each names changed together in enough recent commits (and neither touches both)."""
    owners = _owners(direct)
    for pair in co_changes(history, owners):
        text = pair.text(history.scanned)
        for x, y in ((pair.a, pair.b), (pair.b, pair.a)):
            for a in owners[x]:
                for b in owners[y]:
                    if a != b and y not in concrete[a] and x not in concrete[b]:
                        yield a, b, Evidence(Kind.HISTORY, text, (x, y))


def _classify(plan: Plan, by_task: Mapping[str, TaskFiles],
              found: Mapping[Pair, set[Evidence]]) -> tuple[list[Risk], list[Risk]]:
    """Split the coupled pairs (in plan order) into risks with fixes, ranked, and pairs the plan covers. Each pair
    is turned to the order of work, so that a fix making the second wait for the first cannot close a cycle."""
    position = {t.id: i for i, t in enumerate(plan.tasks)}
    apart = file_conflicts(plan)  # the scheduler never runs these at once
    preds = order_edges(plan)
    order = work_order(plan, preds)
    risks: list[Risk] = []
    covered: list[Risk] = []
    for (a, b), evidence in found.items():
        if order[a] > order[b]:
            a, b, evidence = b, a, {_flipped(e) for e in evidence}
        ranked = tuple(sorted(evidence, key=lambda e: (-WEIGHTS[e.kind], e.text, e.files)))
        reason = _covered_by(a, b, apart, preds, order)
        if reason:
            covered.append(Risk((a, b), ranked, covered=reason))
        else:
            risks.append(Risk((a, b), ranked, _fixes(a, b, ranked, by_task)))
    risks.sort(key=lambda r: (-r.score, position[r.tasks[0]], position[r.tasks[1]]))
    covered.sort(key=lambda r: (position[r.tasks[0]], position[r.tasks[1]]))
    return risks, covered


def _covered_by(a: str, b: str, apart: Mapping[str, frozenset[str]], preds: Mapping[str, Sequence[str]],
                order: Mapping[str, int]) -> str:
    """Why the plan already handles the pair ("" when it does not): `b` waits for `a` through `depends_on` or a
    track, or both declare overlapping files."""
    if b in apart.get(a, frozenset()):  # first: a set lookup, where the order takes a search
        return "their declared files overlap: they never run at once"
    if runs_after(b, a, preds, order):
        return f"{b} runs after {a} (depends_on or track)"
    return ""


def runs_after(later: str, earlier: str, preds: Mapping[str, Sequence[str]], order: Mapping[str, int]) -> bool:
    """Whether `later` depends on `earlier` through dependencies and tracks, transitively. Only tasks after
    `earlier` in the work order can lie on such a path, so the search stops at those before it."""
    floor = order[earlier]
    stack, seen = [later], {later}
    while stack:
        for p in preds[stack.pop()]:
            if p == earlier:
                return True
            if p not in seen and order[p] > floor:
                seen.add(p)
                stack.append(p)
    return False


def _fixes(a: str, b: str, evidence: Sequence[Evidence], by_task: Mapping[str, TaskFiles]) -> tuple[Fix, ...]:
    """Shared files (or a test and its subject) alone: declare them, and the scheduler keeps the two apart in
    either order. Imports or co-change: `b` waits for `a`, so it starts from `a`'s merged result."""
    if all(e.kind in (Kind.OVERLAP, Kind.TESTS) for e in evidence):
        return tuple(Fix(t, "files", by_task[t].paths) for t in (a, b) if not by_task[t].declared)
    return (Fix(b, "depends_on", (a,)),)
