"""One raw task → a Draft (Task keyword arguments): id, fields merged over defaults, prompt, agent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchard.core.model import DEFAULT_AGENT_NAME, valid_task_id
from orchard.plan import fields as f
from orchard.plan.agents import defined, unknown_agents
from orchard.plan.environment import read_environment
from orchard.plan.raw import INVALID, Problems, RawPlan, RawTask
from orchard.plan.readers import read_contained
from orchard.plan.settings import Settings

ID_RULE = (
    "use letters, digits, '.', '_' and '-', at most 64 characters, not starting with '-' or '.', "
    "without '..' and not ending in '.' or '.lock'"
)


@dataclass
class Draft:
    """A task whose fields are coerced; `kwargs` become the Task once the whole plan is valid."""

    id: str
    file: str
    label: str
    kwargs: dict[str, Any]
    track_is_default: bool = False  # the track comes from defaults, so an explicit track listing wins

    @property
    def depends_on(self) -> tuple[str, ...]:
        """The task's dependencies as written."""
        deps: tuple[str, ...] = self.kwargs.get("depends_on", ())
        return deps


def read_task(rt: RawTask, settings: Settings, plan: RawPlan) -> Draft | None:
    """The Draft of a raw task (None when it has no usable id); problems go to plan.problems."""
    problems = plan.problems
    task_id, tag = _read_id(rt, problems)
    problems.check_keys(rt.data, rt.allowed, rt.file, task=tag)
    values = dict(settings.defaults)
    for key, coercer in f.TASK_COERCERS.items():
        if key in rt.data and key in rt.allowed and (rt.data[key] is not None or key == "verify"):
            coerced = problems.coerce(coercer, rt.data[key], rt.file, tag, key)
            if coerced is not INVALID:
                values[key] = coerced
    if rt.data.get("environment") is not None and "environment" in rt.allowed:
        values["environment"] = read_environment(rt.data["environment"], rt.file, problems,
                                                 over=settings.environment, task=tag)
    prompt, prompt_file = _read_prompt(rt, plan, tag)
    kwargs: dict[str, Any] = {"id": tag, "prompt": prompt, "prompt_file": prompt_file}
    kwargs.update((f.TASK_KWARG.get(key, key), value) for key, value in values.items())
    if "estimate_s" not in kwargs:  # `runtime.estimates` may learn one from history
        kwargs["estimated"] = "default"
    track_is_default = "track" in settings.defaults and rt.data.get("track") is None
    return Draft(task_id, rt.file, rt.label, kwargs, track_is_default) if task_id else None


def _read_id(rt: RawTask, problems: Problems) -> tuple[str | None, str]:
    """(valid id or None, the tag naming the task in problems)."""
    value = rt.data.get("id")
    value = rt.default_id if value is None else value
    tag = value if isinstance(value, str) and value else f"#{rt.number}"
    if value is None:
        problems.add(rt.file, "missing id", tag, "id")
    elif not isinstance(value, str):
        problems.add(rt.file, f"the id must be a string, got {f.describe(value)}", tag, "id")
    elif not valid_task_id(value):
        problems.add(rt.file, f"invalid id {f.show(value)}: {ID_RULE}", tag, "id")
    else:
        return value, tag
    return None, tag


def _read_prompt(rt: RawTask, plan: RawPlan, tag: str) -> tuple[str, str | None]:
    """(prompt text, resolved prompt_file or None); problems go to plan.problems."""
    problems = plan.problems
    if rt.prompt is not None:
        if not rt.prompt.strip():
            problems.add(rt.file, "the prompt is empty (no text after the front matter)", tag, "prompt")
        return rt.prompt.strip(), rt.prompt_file
    prompt, prompt_file = rt.data.get("prompt"), rt.data.get("prompt_file")
    if prompt is None and prompt_file is None:
        problems.add(rt.file, "needs a 'prompt' or a 'prompt_file'", tag, "prompt")
    elif prompt is not None and prompt_file is not None:
        problems.add(rt.file, "has both 'prompt' and 'prompt_file'; keep one", tag, "prompt_file")
    elif prompt is not None:
        text = problems.coerce(f.string, prompt, rt.file, tag, "prompt")
        return ("" if text is INVALID else text.strip()), None
    else:
        return _read_prompt_file(rt, plan, tag, prompt_file)
    return "", None


def _read_prompt_file(rt: RawTask, plan: RawPlan, tag: str, value: Any) -> tuple[str, str | None]:
    """(text, resolved path) of a task's prompt_file, which must stay inside the plan's root."""
    name = plan.problems.coerce(f.string, value, rt.file, tag, "prompt_file")
    if name is INVALID:
        return "", None
    try:
        text, resolved = read_contained(name, rt.base_dir, plan.root, plan.root_kind)
    except f.FieldError as exc:
        plan.problems.add(rt.file, f"prompt_file {f.show(name)} {exc}", tag, "prompt_file")
        return "", None
    if not text.strip():
        plan.problems.add(rt.file, f"prompt_file {f.show(name)} is empty", tag, "prompt_file")
    return text.strip(), resolved


def resolve_agents(drafts: list[Draft], settings: Settings, plan: RawPlan,
                   owned: Mapping[str, tuple[str, str]] | None = None) -> None:
    """Give every draft an agent: its own, its track's owner (`owned`, which its own may not contradict),
    defaults.agent, the agent named 'default', or the only one."""
    fallback = settings.default_agent or _implicit_agent(settings)
    orphans: list[str] = []
    for draft in drafts:
        own = draft.kwargs.get("agent")
        owner = (owned or {}).get(draft.id)
        if owner is not None and own not in (None, owner[0]):
            plan.problems.add(draft.file, f"names agent '{own}', but its track '{owner[1]}' runs on agent "
                                          f"'{owner[0]}' (agents.{owner[0]}.track)", draft.id, "agent")
            continue
        if owner is not None:
            draft.kwargs["agent"] = owner[0]
        elif own is None:
            _choose(draft, fallback or "")
            if fallback is None:
                orphans.append(draft.id)
        else:
            _choose(draft, own)
            for name in unknown_agents(own, settings.declared_agents):
                message = f"unknown agent '{name}' (defined: {defined(settings.declared_agents)})"
                plan.problems.add(draft.file, message, draft.id, "agent")
    if orphans:
        plan.problems.add(plan.config_file, _orphan_message(orphans, settings), field="agents")


def _choose(draft: Draft, agent: str | tuple[str, ...]) -> None:
    """The draft's `agent` (its first choice) and, for a preference list, `agents`."""
    if isinstance(agent, str):
        draft.kwargs["agent"] = agent
    else:
        draft.kwargs["agent"], draft.kwargs["agents"] = agent[0], agent


def track_owners(settings: Settings, members: Mapping[str, list[str]], plan: RawPlan) -> dict[str, tuple[str, str]]:
    """An agent entry's `track: NAME` (the workstream guide's "agent-1 owns pipeline_plus"): that track's tasks run
    on it. Returns task → (agent, track); one track has at most one owner, and it must exist."""
    owners: dict[str, str] = {}
    for name, spec in sorted(settings.agents.items()):
        track = spec.option("track")
        if not track:
            continue
        if track in owners:
            plan.problems.add(plan.config_file, f"track '{track}' is owned by agent '{owners[track]}' already",
                              field=f"agents.{name}.track")
        elif track not in members:
            plan.problems.add(plan.config_file, f"no track '{track}' (tracks: {', '.join(sorted(members)) or 'none'})",
                              field=f"agents.{name}.track")
        else:
            owners[track] = name
    return {task_id: (agent, track) for track, agent in owners.items() for task_id in members[track]}


def _implicit_agent(settings: Settings) -> str | None:
    """The agent used when neither the task nor defaults names one, if that is unambiguous."""
    if DEFAULT_AGENT_NAME in settings.declared_agents:
        return DEFAULT_AGENT_NAME
    if len(settings.declared_agents) == 1:
        return next(iter(settings.declared_agents))
    return None


def _orphan_message(orphans: list[str], settings: Settings) -> str:
    """The message for tasks that name no agent when no agent can be chosen for them."""
    if not settings.declared_agents:
        return "no agent defined: add an 'agents:' section and name the agent in defaults.agent or each task"
    shown = ", ".join(f"'{o}'" for o in orphans[:5]) + (f" and {len(orphans) - 5} more" if len(orphans) > 5 else "")
    return f"task {shown} names no agent and there is no defaults.agent (defined: {defined(settings.declared_agents)})"
