"""Live control, pure: what a request (`orchard set`, `orchard agents add`) makes of a run's plan and width.

The CLI checks a request with these functions before it records it, and the run's session applies it with the same
ones (`runtime.engine`), so a request the CLI accepted cannot mean something else when it is carried out. Limits and
agents change here; tasks are added by `plan.extend` (through an `Extender`), and changed or removed only as a
session starts, from the plan's file (`--reload`, through a `Reloader`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Protocol

from orchard.core.model import AgentSpec, Plan, TaskStatus
from orchard.core.plan_diff import Reload
from orchard.core.records import ControlRequest
from orchard.core.serialize import agent_from_dict

CANCEL_TASKS, SET, ADD_AGENT, ADD_TASKS = "cancel_tasks", "set", "add_agent", "add_tasks"
RUN_KEYS = ("parallel", "budget_usd")
AGENT_KEYS = ("max_parallel", "paused")


@dataclass(frozen=True)
class Replan:
    """The run's plan and width after a request, and what changed, in words."""

    plan: Plan
    parallel: int
    changes: tuple[str, ...]


@dataclass(frozen=True)
class Addition:
    """What `orchard add` makes of a run's plan (`plan.extend`): the plan with the new tasks, which ones they are,
    and those a repeated request (a resumed parent asking again) had added already."""

    plan: Plan
    added: tuple[str, ...]
    already: tuple[str, ...] = ()

    def said(self, parent: str | None) -> str:
        """What was done, in words (the request's result)."""
        of = f" (children of {parent})" if parent else ""
        parts = [f"added {', '.join(self.added)}{of}"] if self.added else []
        if self.already:
            parts.append(f"{', '.join(self.already)} added already")
        return "; ".join(parts) or "nothing to add"


class Extender(Protocol):
    """`plan.extend.add_tasks`, given to a session by its caller (the runtime does not read plans itself)."""

    def __call__(self, plan: Plan, entries: Sequence[Any], *, file: str, parent: str | None = None,
                 parent_agent: str | None = None, depth: int = 0) -> Addition: ...


class Reloader(Protocol):
    """`plan.extend.reloader_for`: the plan file as it is now, set over a run's snapshot (`core.plan_diff`), given
    to a session by its caller; `apply` says whether to take the changes (`--reload`) or only say them."""

    @property
    def apply(self) -> bool: ...

    def __call__(self, snapshot: Plan, statuses: Mapping[str, TaskStatus]) -> Reload: ...


def split_key(key: str, plan: Plan) -> tuple[str | None, str]:
    """(agent or None, setting) of an `orchard set` key: `parallel`, `budget_usd`, `AGENT.max_parallel`,
    `AGENT.paused`; ValueError naming what is wrong."""
    if key in RUN_KEYS:
        return None, key
    agent, dot, setting = key.rpartition(".")
    if not dot or setting not in AGENT_KEYS:
        raise ValueError(f"'{key}': expected one of {', '.join(RUN_KEYS)} or AGENT.{' / AGENT.'.join(AGENT_KEYS)}")
    if agent not in plan.agents:
        known = ", ".join(sorted(plan.agents)) or "none"
        raise ValueError(f"'{key}': the run has no agent '{agent}' (its agents: {known})")
    return agent, setting


def apply_set(plan: Plan, parallel: int, assignments: Sequence[tuple[str, Any]]) -> Replan:
    """The plan and width with `orchard set`'s assignments (values already typed) made, in order."""
    changes = []
    for key, value in assignments:
        agent, setting = split_key(key, plan)
        if agent is None and setting == "parallel":
            parallel = int(value)
        elif agent is None:
            plan = replace(plan, budget_usd=None if value is None else float(value))
        else:
            plan = _with_agent(plan, _set_agent(plan.agents[agent], setting, value))
        changes.append(f"{key}={_shown(value)}")
    return Replan(plan, parallel, tuple(changes))


def apply_add_agent(plan: Plan, parallel: int, data: Mapping[str, Any]) -> Replan:
    """The plan with a new agent entry (`orchard agents add`), named as a fallback of the agents it is for."""
    name = str(data["name"])
    if name in plan.agents:
        raise ValueError(f"the run has an agent named '{name}' already")
    plan = _with_agent(plan, agent_from_dict(name, dict(data["agent"])))
    changes = [f"added agent {name} ({data['agent']['type']})"]
    for other in data.get("fallback_for", ()):
        if other not in plan.agents:
            raise ValueError(f"--fallback-for: the run has no agent '{other}'")
        spec = plan.agents[other]
        fallbacks = (*spec.option("fallback", ()), name)
        plan = _with_agent(plan, replace(spec, options=MappingProxyType({**spec.options, "fallback": fallbacks})))
        changes.append(f"{other} falls back to {name}")
    return Replan(plan, parallel, tuple(changes))


def replan(plan: Plan, parallel: int, request: ControlRequest) -> Replan:
    """What a recorded `set` or `add_agent` request makes of the plan (ValueError if it no longer applies)."""
    data = json.loads(request.data)
    if request.kind == SET:
        return apply_set(plan, parallel, [(str(k), v) for k, v in data["assign"]])
    if request.kind == ADD_AGENT:
        return apply_add_agent(plan, parallel, data)
    raise ValueError(f"not a change of plan: {request.kind}")


def _set_agent(spec: AgentSpec, setting: str, value: Any) -> AgentSpec:
    if setting == "max_parallel":
        return replace(spec, max_parallel=None if value is None else int(value))
    return replace(spec, options=MappingProxyType({**spec.options, "paused": bool(value)}))


def _with_agent(plan: Plan, spec: AgentSpec) -> Plan:
    # a new Plan object: its derived values (ranks …) are computed again from the same tasks when asked for
    return replace(plan, agents=MappingProxyType({**plan.agents, spec.name: spec}))


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)
