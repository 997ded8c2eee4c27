"""How a plan file differs from the snapshot its run started from, and the plan a run goes on with when told to
take the changes (`orchard resume --reload`, `retry --reload`). Pure: plans and statuses in, values out.

Merged tasks are history: their changes went into the integration branch, so their definitions and ids never
change; a task the file no longer has is cancelled unless it merged (or was added to the run by `orchard add`,
which no file lists)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType

from orchard.core.model import Plan, Task, TaskStatus

# Plan-wide settings a reload takes from the file (the run's `parallel` is the run's own: `orchard set` changes it)
SETTINGS = ("agents", "environment", "limits", "budget_usd", "gate", "sandbox", "network", "redact", "preflight",
            "priority_mode", "defaults", "max_added_tasks", "max_add_depth", "notify")
# What a run learns about a task by itself, never a change of the user's
LEARNED = ("estimate_s", "estimated")


@dataclass(frozen=True)
class PlanChanges:
    """What changed, by task id: prompts, other fields (`other`: task → the fields besides its prompt), new tasks,
    removed ones; and plan-wide settings."""

    prompts: tuple[str, ...] = ()
    other: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))  # task → fields
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.prompts or self.other or self.added or self.removed or self.settings)

    def summary(self) -> str:
        """In words: "2 tasks' prompts, 1 task's verify, 1 new task (docs), agents"."""
        parts = [_count(self.prompts, "task's prompt", "tasks' prompts")]
        other = sorted({name for names in self.other.values() for name in names})
        if self.other:
            parts.append(_count(tuple(self.other), f"task's {', '.join(other)}", f"tasks' {', '.join(other)}"))
        parts.append(_count(self.added, "new task", "new tasks"))
        parts.append(_count(self.removed, "removed task", "removed tasks"))
        if self.settings:
            parts.append(", ".join(self.settings))
        return ", ".join(p for p in parts if p)


def _count(ids: tuple[str, ...], one: str, many: str) -> str:
    if not ids:
        return ""
    shown = ", ".join(ids[:4]) + (" …" if len(ids) > 4 else "")
    return f"{len(ids)} {one if len(ids) == 1 else many} ({shown})"


def plan_changes(snapshot: Plan, current: Plan) -> PlanChanges:
    """How `current` (the file as it is now) differs from `snapshot` (what the run started with, plus tasks added
    to the run since, which the file is not expected to list)."""
    prompts, changed = [], {}
    for task in current.tasks:
        if task.id not in snapshot:
            continue
        before = snapshot.task(task.id)
        if before.prompt != task.prompt:
            prompts.append(task.id)
        names = _changed_fields(before, task)
        if names:
            changed[task.id] = names
    return PlanChanges(
        prompts=tuple(prompts), other=MappingProxyType(changed),
        added=tuple(t.id for t in current.tasks if t.id not in snapshot),
        removed=tuple(t.id for t in snapshot.tasks if t.id not in current and t.id not in snapshot.added),
        settings=tuple(name for name in SETTINGS if getattr(snapshot, name) != getattr(current, name)))


def _changed_fields(before: Task, after: Task) -> tuple[str, ...]:
    return tuple(f.name for f in fields(Task)
                 if f.name not in ("prompt", *LEARNED) and getattr(before, f.name) != getattr(after, f.name))


@dataclass(frozen=True)
class Reload:
    """The plan a run goes on with: `plan`, the `changes` it took, the tasks to cancel (removed from the file,
    not merged), and `kept`: merged tasks whose changes were not taken."""

    plan: Plan
    changes: PlanChanges
    cancel: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()

    def said(self, source: str) -> str:
        """The journal's note of it."""
        text = f"reloaded {source}: {self.changes.summary() or 'no changes'}"
        if self.cancel:
            text += f"; cancelled {', '.join(self.cancel)} (no longer in the plan)"
        if self.kept:
            text += f"; kept {', '.join(self.kept)} as merged (a merged task does not change)"
        return text


def reloaded(snapshot: Plan, current: Plan, statuses: Mapping[str, TaskStatus]) -> Reload:
    """`current`'s tasks and settings over `snapshot`, except merged tasks (kept as they ran) and tasks added to
    the run; the file's removed tasks stay in the plan (their records do), cancelled unless merged. The caller
    checks the result's graph (`plan.build.validate_graph`)."""
    changes = plan_changes(snapshot, current)
    # a task left merging may be merged already (`runtime.recovery` decides after this): history too
    merged = {task_id for task_id, status in statuses.items() if status in (TaskStatus.MERGED, TaskStatus.MERGING)}
    tasks = [snapshot.task(t.id) if t.id in merged else t for t in current.tasks]
    left = [replace(t, track=None) if t.id not in snapshot.added else t
            for t in snapshot.tasks if t.id not in current]  # a removed task no longer holds its track's turn
    all_tasks = (*tasks, *left)
    plan = replace(current, tasks=all_tasks, source=snapshot.source, base=snapshot.base, parallel=snapshot.parallel,
                   compat=snapshot.compat, added=snapshot.added, estimates=snapshot.estimates,
                   _index=MappingProxyType({t.id: t for t in all_tasks}))
    touched = {*changes.prompts, *changes.other}
    return Reload(plan, changes,
                  cancel=tuple(t for t in changes.removed
                               if t not in merged and statuses.get(t) not in (None, TaskStatus.CANCELLED)),
                  kept=tuple(t for t in current.ids if t in merged and t in touched))
