"""Guardrails on an attempt's result, once committed and before its verify.

A conflict resolution (`on_conflict: resolve`: the attempt's worktree held the integration tip with the task's
previous result merged in, git's markers left in) must leave no conflict marker and keep every line the integration
side added since the merge base. A result that removes lines which other tasks of the run added and merged is
warned about or refused (`protect_merged`), so no merged work is undone without anyone being told.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchard.core.feedback import keep_lines_feedback, protected_lines, resolution_refused, resolve_feedback
from orchard.core.journal import Verdict
from orchard.core.model import Outcome, Task
from orchard.runtime.context import RunContext
from orchard.runtime.merging import recorded_result
from orchard.vcs import Repo, is_ancestor
from orchard.vcs.lines import Lines, diff_lines, merge_base, missing, overlap, shown, subjects, with_markers
from orchard.vcs.worktrees import merge_for_resolution


@dataclass(frozen=True)
class Resolution:
    """The conflict an attempt resolves: the previous result merged in (`theirs`), onto the tip it started from
    (`base` is their merge base), the paths git left conflicted, and what the agent is told."""

    theirs: str
    base: str
    paths: tuple[str, ...]
    note: str


def resolution_wanted(ctx: RunContext, task: Task) -> str | None:
    """The previous result to merge for the agent to resolve: when the task resolves its conflicts and its last
    merge conflicted (the record keeps the paths until it merges)."""
    if task.on_conflict != "resolve" or not ctx.journal.task(task.id).conflicts:
        return None
    return recorded_result(ctx, task.id)[0]


def start_resolution(repo: Repo, worktree: Path, tip: str, theirs: str) -> Resolution:
    """Merge the previous result into the worktree at the tip, leaving the conflict to the agent (worker thread)."""
    paths = tuple(merge_for_resolution(worktree, theirs))
    base = merge_base(repo, tip, theirs)
    note = resolve_feedback(paths, ours=subjects(repo, base, tip), theirs=subjects(repo, base, theirs))
    return Resolution(theirs, base, paths, note)


@dataclass(frozen=True)
class LinesRemoved:
    """A result that removes lines other tasks merged, under `protect_merged: warn`: what to say, and whose."""

    text: str
    others: tuple[str, ...]


async def guard(repo: Repo, *, task: Task, start: str, resolution: Resolution | None, result: Verdict,
                merged: Mapping[str, str]) -> tuple[Verdict, LinesRemoved | None]:
    """The result as it stands, or refused (`rejected`, with the reason as the next attempt's feedback); with the
    warning to journal for lines removed under `protect_merged: warn`. `merged`: the merge commit of every other
    task merged when the attempt started (one merged later is no ancestor of its start: its lines cannot be
    what the result removed)."""
    end = result.end_commit
    if result.outcome is not Outcome.SUCCESS or end is None:
        return result, None
    if resolution is not None:
        problem = await asyncio.to_thread(_resolution_problem, repo, resolution, start, end)
        if problem:
            return Verdict(Outcome.REJECTED, problem, end, keep_lines_feedback(problem)), None
    if task.protect_merged == "off" or not merged:  # nothing of anyone else's to lose: no git process
        return result, None
    found = await asyncio.to_thread(removed_merged_lines, repo, start, end, dict(merged))
    if not found:
        return result, None
    detail = protected_lines({other: shown(lines) for other, lines in found.items()})
    if task.protect_merged == "reject":
        return Verdict(Outcome.REJECTED, detail, end, keep_lines_feedback(detail)), None
    return result, LinesRemoved(f"task {task.id}'s result {detail}", tuple(sorted(found)))


def merged_others(ctx: RunContext, task_id: str) -> dict[str, str]:
    """The merge commit of every task but `task_id` merged so far (what `protect_merged` protects)."""
    return {t.task_id: t.merged_commit for t in ctx.journal.tasks() if t.merged_commit and t.task_id != task_id}


def _resolution_problem(repo: Repo, resolution: Resolution, start: str, end: str) -> str:
    """Why the resolution is refused ("" when it is not): markers left, or lines of the integration side lost."""
    markers = with_markers(repo, end, resolution.paths)
    ours, _ = diff_lines(repo, resolution.base, start)
    lost = missing(ours, repo, end)
    return resolution_refused(markers, shown(lost)) if markers or lost else ""


def removed_merged_lines(repo: Repo, start: str, end: str, merged: dict[str, str]) -> dict[str, Lines]:
    """The lines `start..end` removes that a merged task's merge brought in, by that task (worker thread)."""
    _, removed = diff_lines(repo, start, end)
    if not removed:
        return {}
    found = {}
    for other, commit in merged.items():
        added, _ = diff_lines(repo, f"{commit}^1", commit, tuple(removed))
        common = overlap(removed, added)
        if common and is_ancestor(repo, commit, start):  # a later merge's same line is not what was removed
            found[other] = common
    return found
