"""Deterministic plan analysis (`orchard analyze`, and `orchard plan`'s warnings): which files each task will touch,
which tasks are coupled (shared files, Python imports, co-change in recent history), and the fix for each pair the
plan does not already order. No model calls; docs/analysis.md has the rules.

`analyze` reads the base commit through git; `analyze_tree` is the same analysis on values (the tree's paths, a
file reader, the history), for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchard.analysis.gitdata import base_commit, read_files, recent_history, tree_paths
from orchard.analysis.history import DEFAULT_HISTORY, NO_HISTORY, History
from orchard.analysis.imports import ImportGraph, Reader
from orchard.analysis.infer import Pairs, inferred_files
from orchard.analysis.model import Analysis, Evidence, FileRef, Fix, How, Kind, Risk, TaskFiles
from orchard.analysis.risks import find_risks
from orchard.analysis.tree import Tree
from orchard.core.model import Plan, Task

__all__ = ["DEFAULT_HISTORY", "Analysis", "Evidence", "FileRef", "Fix", "History", "How", "Kind", "Risk",
           "TaskFiles", "analyze", "analyze_tree"]


def analyze(plan: Plan, repo_root: str | Path, *, base: str | None = None,
            history: int = DEFAULT_HISTORY) -> Analysis:
    """Analyse `plan` against `base` (default: the plan's `base`, else HEAD) of the repository at `repo_root`,
    scanning at most `history` commits back from it. A repository without commits gives an analysis of the
    declared files alone; a base that names nothing is a RefProblem."""
    root = Path(repo_root)
    commit = base_commit(root, base if base is not None else plan.base)

    def read(paths: list[str]) -> dict[str, str]:
        return read_files(root, commit, paths) if commit is not None else {}

    return analyze_tree(plan, tree_paths(root, commit), read=read, history=recent_history(root, commit, history),
                        base=commit, history_limit=history)


def analyze_tree(plan: Plan, paths: Sequence[str], *, read: Reader, history: History = NO_HISTORY,
                 base: str | None = None, history_limit: int = DEFAULT_HISTORY) -> Analysis:
    """The analysis of `plan` on a tree given as values: its `paths`, `read` for file contents, `history`."""
    tree = Tree(paths)
    graph = ImportGraph(tree, read)
    pairs = Pairs(tree, graph)
    files = tuple(task_files(task, tree, pairs) for task in plan.tasks)
    risks, covered = find_risks(plan, files, tree, graph, history)
    return Analysis(source=plan.source, base=base, history_limit=history_limit, history_scanned=history.scanned,
                    files=files, risks=tuple(risks), covered=tuple(covered))


def task_files(task: Task, tree: Tree, pairs: Pairs) -> TaskFiles:
    """A task's declared files as they are; without any, those its prompt mentions."""
    if task.files:
        return TaskFiles(task.id, True, tuple(FileRef(f, How.DECLARED) for f in task.files))
    return TaskFiles(task.id, False, inferred_files(task.prompt, tree, pairs))
