"""The shared builder: a RawPlan from any reader → a validated Plan, or one PlanError with every problem."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchard.core.model import Plan, Task
from orchard.errors import PlanError, Problem
from orchard.plan import graph_checks as g
from orchard.plan.raw import Problems, RawPlan
from orchard.plan.settings import Settings, read_settings
from orchard.plan.tasks import Draft, read_task, resolve_agents, track_owners
from orchard.plan.tracks import Tracks, assemble_tracks


def build(raw: RawPlan) -> Plan:
    """Check everything, then freeze the plan; raise PlanError listing all problems found."""
    settings = read_settings(raw)
    drafts = _read_tasks(raw, settings)
    sources = [(raw.config_file, raw.config.get("tracks")), *raw.track_sources]
    tracks = assemble_tracks(sources, drafts, raw.problems)
    resolve_agents(list(drafts.values()), settings, raw, track_owners(settings, tracks.members, raw))
    _check_graph(drafts, tracks, raw.problems)
    if raw.problems.items:
        raise PlanError(raw.problems.items)
    return Plan.build(
        tasks=[Task(**draft.kwargs) for draft in drafts.values()],
        agents=settings.agents,
        tracks={name: tuple(ids) for name, ids in tracks.members.items()},
        base=settings.base,
        parallel=settings.parallel,
        source=raw.source,
        budget_usd=settings.budget_usd,
        redact=settings.redact,
        sandbox=settings.sandbox,
        network=settings.network,
        environment=settings.environment,
        limits=settings.limits,
        preflight=settings.preflight,
        gate=settings.gate,
        priority_mode=settings.priority_mode,
        compat=settings.compat or raw.default_compat,
        defaults=settings.raw_defaults,
        max_added_tasks=settings.max_added_tasks,
        max_add_depth=settings.max_add_depth,
        estimates=settings.estimates,
        notify=settings.notify,
        executor=settings.executor,
    )


def _read_tasks(raw: RawPlan, settings: Settings) -> dict[str, Draft]:
    """Drafts by id in plan order; a repeated id is reported and the later task dropped."""
    drafts: dict[str, Draft] = {}
    for raw_task in raw.tasks:
        draft = read_task(raw_task, settings, raw)
        if draft is None:
            continue
        first = drafts.get(draft.id)
        if first is not None:
            raw.problems.add(draft.file, f"duplicate id '{draft.id}' (also in {first.label})", draft.id, "id")
        else:
            drafts[draft.id] = draft
    if not raw.tasks and not raw.problems.items:
        raw.problems.add(raw.source, "the plan has no tasks")
    return drafts


def _check_graph(drafts: Mapping[str, Draft], tracks: Tracks, problems: Problems) -> None:
    """Dependencies, cycles and track order."""
    order = list(drafts)
    file_of = {task_id: draft.file for task_id, draft in drafts.items()}
    deps = {task_id: draft.depends_on for task_id, draft in drafts.items()}
    _check_order(order, deps, file_of, members=tracks.members, track_file=tracks.file, problems=problems)


def _check_order(
    order: Sequence[str],
    deps: Mapping[str, Sequence[str]],
    file_of: Mapping[str, str],
    *,
    members: Mapping[str, Sequence[str]],
    track_file: Mapping[str, str],
    problems: Problems,
) -> None:
    """Run the graph checks in order; the indirect track check only on an otherwise sound graph."""
    clean = g.clean_dependencies(order, deps, file_of, problems)
    cyclic = g.check_cycles(order, clean, file_of, problems)
    misordered = g.check_track_order(members, track_file, clean, problems)
    if not cyclic and not misordered and any(len(m) > 1 for m in members.values()):  # no order edges, no new cycle
        g.check_track_cycles(order, clean, members, file_of, problems)


def validate_graph(plan: Plan) -> list[Problem]:
    """The graph problems of an already built Plan (e.g. one made with `Plan.build` in code)."""
    problems = Problems()
    order = list(plan.ids)
    file_of = {task_id: plan.source for task_id in order}
    deps = {task.id: task.depends_on for task in plan.tasks}
    members = {name: [t for t in ids if t in file_of] for name, ids in plan.tracks.items()}
    for name, ids in plan.tracks.items():
        for task_id in ids:
            if task_id not in file_of:
                problems.add(plan.source, f"track '{name}' lists unknown task '{task_id}'", field="tracks")
    _check_order(order, deps, file_of, members=members, track_file=dict.fromkeys(members, plan.source),
                 problems=problems)
    return problems.items
