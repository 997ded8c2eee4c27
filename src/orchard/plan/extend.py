"""Tasks added to a live or interrupted run (`orchard add`): read in the plan's task format, with the run's
`defaults:`, and checked against the run's plan as it is now: ids unique, dependencies known, agents defined, no
cycle, and the run's limits on added tasks (`max_added_tasks`, `max_add_depth`).

The same function checks a request in the CLI (exit 2 naming the file, task and field) and applies it in the run's
session, so what the CLI accepted cannot mean something else later; an agent's request (from inside its sandbox)
is checked only there. Prompts are inline: the CLI reads a task's `prompt_file` itself before it sends the task.
And the plan file reloaded over a run's snapshot (`--reload`, `FileReloader`), checked like a new plan.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from orchard.core.model import Plan, Task, TaskStatus
from orchard.core.plan_diff import Reload, reloaded
from orchard.core.steering import Addition
from orchard.errors import PlanError, Problem
from orchard.plan import fields as f
from orchard.plan.build import validate_graph
from orchard.plan.raw import Problems, RawPlan
from orchard.plan.readers import parse_yaml
from orchard.plan.settings import Settings, read_defaults
from orchard.plan.tasks import read_task, resolve_agents
from orchard.plan.yaml_plan import raw_tasks

ADDED_FIELDS = f.TASK_FIELDS - {"prompt_file"}  # prompts come inline (`inline_prompts`)


def read_task_files(names: Sequence[str], read_stdin: Callable[[], str]) -> tuple[list[Any], str]:
    """Every file's task entries (`-`: stdin), prompt files read in, and how problems name the files; PlanError
    naming the file when one cannot be read or parsed."""
    entries: list[Any] = []
    for name in names:
        problems = Problems()
        try:
            text = read_stdin() if name == "-" else Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PlanError([Problem(name, f"cannot read it: {exc}")]) from None
        document = parse_yaml(text, name, problems)
        if problems.items:
            raise PlanError(problems.items)
        base = Path.cwd() if name == "-" else Path(name).resolve().parent
        entries.extend(inline_prompts(task_entries(document, name), base))
    label = "<stdin>" if list(names) == ["-"] else ", ".join(names)
    try:
        json.dumps(entries)
    except (TypeError, ValueError):  # YAML dates and the like: no task field takes them
        raise PlanError([Problem(label, "the tasks hold values that are not text, numbers or lists")]) from None
    return entries, label


def task_entries(document: Any, file: str) -> list[Any]:
    """The task entries of a document that is a list of tasks or a mapping with a `tasks:` list."""
    entries = document.get("tasks") if isinstance(document, Mapping) else document
    if not isinstance(entries, list) or not entries:
        raise PlanError([Problem(file, "expected a list of tasks or a mapping with a 'tasks' list, got "
                                       f"{f.describe(document)}", field="tasks")])
    return entries


def inline_prompts(entries: list[Any], base_dir: Path) -> list[Any]:
    """The entries with each `prompt_file` (relative to `base_dir`) read into `prompt`; done by the CLI, which reads
    with the rights of whoever runs it, never by the run's session."""
    out = []
    for entry in entries:
        if isinstance(entry, Mapping) and isinstance(entry.get("prompt_file"), str) and "prompt" not in entry:
            path = base_dir / entry["prompt_file"]
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                task = str(entry.get("id", "?"))
                raise PlanError([Problem(str(path), f"cannot read the prompt_file: {exc}", task=task,
                                         field="prompt_file")]) from None
            entry = {k: v for k, v in entry.items() if k != "prompt_file"} | {"prompt": text}
        out.append(entry)
    return out


def add_tasks(plan: Plan, entries: Sequence[Any], *, file: str, parent: str | None = None,
              parent_agent: str | None = None, depth: int = 0) -> Addition:
    """The plan with `entries` added; PlanError with every problem. `parent`: the task whose attempt asks (its
    agent is the new tasks' default agent), `depth` how deep that parent was added itself (0: a plan's task)."""
    problems = Problems()
    raw = RawPlan(file, Path(file).parent, "request", {}, file, frozenset())
    raw.problems = problems
    settings = _settings(plan, parent_agent, file, problems)
    tasks = raw_tasks(list(entries), file, Path(file).parent, problems)
    for rt in tasks:
        rt.allowed = ADDED_FIELDS
    drafts = [d for d in (read_task(rt, settings, raw) for rt in tasks) if d is not None]
    resolve_agents(drafts, settings, raw)
    already = [d.id for d in drafts if d.id in plan and _same(plan.task(d.id), d.kwargs)]
    fresh = [d for d in drafts if d.id not in already]
    for d in fresh:
        if d.id in plan:
            problems.add(file, f"the run has a task '{d.id}' already", d.id, "id")
    _check_limits(plan, len(fresh), depth=depth, file=file, problems=problems, parent=parent)
    if problems.items:
        raise PlanError(problems.items)
    new = [Task(**d.kwargs) for d in fresh]
    extended = _with_tasks(plan, new)
    graph = [p for p in validate_graph(extended) if p.task in {t.id for t in new} or not p.task]
    if graph:
        raise PlanError([replace(p, file=file) for p in graph])
    return Addition(extended, tuple(t.id for t in new), tuple(already))


def _settings(plan: Plan, parent_agent: str | None, file: str, problems: Problems) -> Settings:
    """The plan-wide settings an added task is read with: the run's agents, environment and `defaults:`; without
    a default agent, the parent's."""
    settings = Settings(agents=dict(plan.agents), declared_agents=set(plan.agents), environment=plan.environment)
    read_defaults(plan.defaults or None, file, problems, settings)
    if settings.default_agent is None:
        settings.default_agent = parent_agent
    return settings


def _same(task: Task, kwargs: Mapping[str, Any]) -> bool:
    """A repeated request (a resumed parent asking again) names the same task: same prompt, same dependencies."""
    return task.prompt == kwargs.get("prompt") and task.depends_on == tuple(kwargs.get("depends_on", ()))


def _check_limits(plan: Plan, count: int, *, depth: int, file: str, problems: Problems, parent: str | None) -> None:
    if count and len(plan.added) + count > plan.max_added_tasks:
        problems.add(file, f"the run may add at most {plan.max_added_tasks} tasks (max_added_tasks); "
                           f"{len(plan.added)} were added already, this asks for {count} more", field="tasks")
    if count and parent is not None and depth + 1 > plan.max_add_depth:
        problems.add(file, f"task '{parent}' was added {depth} level(s) deep: its children would be deeper than "
                           f"max_add_depth ({plan.max_add_depth})", field="tasks")


def _with_tasks(plan: Plan, new: Sequence[Task]) -> Plan:
    """The plan with `new` at the end (a task's `track` puts it last in that track)."""
    tracks = {name: list(ids) for name, ids in plan.tracks.items()}
    for t in new:
        if t.track:
            tracks.setdefault(t.track, []).append(t.id)
    tasks = (*plan.tasks, *new)
    return replace(plan, tasks=tasks, tracks=MappingProxyType({k: tuple(v) for k, v in tracks.items()}),
                   added=(*plan.added, *(t.id for t in new)), _index=MappingProxyType({t.id: t for t in tasks}))


@dataclass(frozen=True)
class FileReloader:
    """A `core.steering.Reloader` of the plan file as loaded now (`current`): the run's snapshot with its changes,
    checked as a new plan would be (PlanError naming the file, task and field)."""

    current: Plan
    apply: bool

    def __call__(self, snapshot: Plan, statuses: Mapping[str, TaskStatus]) -> Reload:
        reload = reloaded(snapshot, self.current, statuses)
        problems = validate_graph(reload.plan)
        if problems:
            raise PlanError([replace(p, file=self.current.source) for p in problems])
        return reload
