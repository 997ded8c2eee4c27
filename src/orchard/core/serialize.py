"""Plan ⇄ plain JSON-able dicts, so a run keeps the exact plan it started with (resume never re-reads the file)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, fields
from types import MappingProxyType
from typing import Any

from orchard.core.model import (
    CODEX_SANDBOXES,
    DEFAULT_ADD_DEPTH,
    DEFAULT_MAX_ADDED,
    NO_ENVIRONMENT,
    AgentSpec,
    Environment,
    Gate,
    Limits,
    Notify,
    NotifyEvent,
    Outcome,
    Plan,
    Task,
)
from orchard.core.notify import hidden_url
from orchard.core.redact import FORMAT_REDACTOR, SECRET_NAME

_TASK_FIELDS = {f.name for f in fields(Task)}
_ENVIRONMENT_FIELDS = {f.name for f in fields(Environment)}
_LIMIT_FIELDS = {f.name for f in fields(Limits)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    return value


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """A JSON-able snapshot of a validated plan."""
    return {
        "source": plan.source,
        "base": plan.base,
        "parallel": plan.parallel,
        "budget_usd": plan.budget_usd,
        "redact": list(plan.redact),
        "sandbox": plan.sandbox,
        "network": plan.network,
        "environment": _plain(asdict(plan.environment)),
        "limits": asdict(plan.limits),
        "preflight": plan.preflight,
        "gate": _plain(asdict(plan.gate)) if plan.gate else None,
        "priority_mode": plan.priority_mode,
        "compat": plan.compat,
        "defaults": _plain(plan.defaults),
        "added": list(plan.added),
        "max_added_tasks": plan.max_added_tasks,
        "max_add_depth": plan.max_add_depth,
        "estimates": plan.estimates,
        "executor": plan.executor,
        "notify": [_plain(asdict(entry)) for entry in plan.notify],
        "tracks": {k: list(v) for k, v in plan.tracks.items()},
        "agents": {name: agent_to_dict(a) for name, a in plan.agents.items()},
        "tasks": [_plain(asdict(t)) for t in plan.tasks],
    }


def _frozen(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """Rebuild the Plan saved by `plan_to_dict`."""
    tasks = [_task(t) for t in data["tasks"]]
    agents = {name: agent_from_dict(name, a) for name, a in data["agents"].items()}
    return Plan.build(tasks, agents, tracks={k: tuple(v) for k, v in data.get("tracks", {}).items()},
                      base=data.get("base"), parallel=int(data.get("parallel", 4)),
                      source=str(data.get("source", "<plan>")), budget_usd=data.get("budget_usd"),
                      redact=tuple(data.get("redact", ())), sandbox=str(data.get("sandbox", "auto")),
                      network=str(data.get("network", "host")),
                      environment=_environment(data.get("environment")) or NO_ENVIRONMENT,
                      limits=Limits(**{k: v for k, v in (data.get("limits") or {}).items() if k in _LIMIT_FIELDS}),
                      preflight=str(data.get("preflight", "auto")), gate=_gate(data.get("gate")),
                      priority_mode=str(data.get("priority_mode", "tiebreak")),
                      compat=str(data.get("compat", "none")), defaults=data.get("defaults") or {},
                      added=tuple(data.get("added", ())),
                      max_added_tasks=int(data.get("max_added_tasks", DEFAULT_MAX_ADDED)),
                      max_add_depth=int(data.get("max_add_depth", DEFAULT_ADD_DEPTH)),
                      estimates=str(data.get("estimates", "learned")), executor=str(data.get("executor", "local")),
                      notify=tuple(_notify(entry) for entry in data.get("notify") or ()))


def agent_to_dict(agent: AgentSpec) -> dict[str, Any]:
    """An agent entry's JSON form (in a plan snapshot, and in an `orchard agents add` request)."""
    return {"type": agent.type, "max_parallel": agent.max_parallel, "options": _plain(agent.options)}


def agent_from_dict(name: str, data: dict[str, Any]) -> AgentSpec:
    """The agent entry `agent_to_dict` wrote."""
    options = MappingProxyType({_option_name(k, v): _frozen(v) for k, v in data.get("options", {}).items()})
    return AgentSpec(name, data["type"], data.get("max_parallel"), options)


def _gate(data: Any) -> Gate | None:
    if not data:
        return None
    return Gate(verify=tuple(data["verify"]), timeout_s=float(data["timeout_s"]), batch=int(data["batch"]))


def _notify(data: dict[str, Any]) -> Notify:
    command = data.get("command")
    return Notify(events=tuple(NotifyEvent(e) for e in data["events"]),
                  command=tuple(command) if command is not None else None, webhook=data.get("webhook"),
                  desktop=bool(data.get("desktop", False)), timeout_s=float(data["timeout_s"]),
                  retries=int(data["retries"]))


def _task(data: dict[str, Any]) -> Task:
    values: dict[str, Any] = {k: _frozen(v) for k, v in data.items() if k in _TASK_FIELDS}
    values["environment"] = _environment(data.get("environment"))
    values["retry_on"] = tuple(Outcome(o) for o in data.get("retry_on", ()))
    return Task(**values)


def _environment(data: Any) -> Environment | None:
    """An Environment from its snapshot (lists back to tuples), None for none."""
    if not isinstance(data, dict):
        return None
    frozen = {k: _frozen(v) for k, v in data.items() if k in _ENVIRONMENT_FIELDS}
    for key in ("setup", "teardown", "env"):
        frozen[key] = tuple(tuple(item) for item in frozen.get(key, ()))
    return Environment(**frozen)


def _option_name(key: str, value: Any) -> str:
    """An option's name in this version: codex's own `sandbox` (read-only, workspace-write …) is `codex_sandbox` now
    that `sandbox` is orchard's, in snapshots taken before."""
    return "codex_sandbox" if key == "sandbox" and value in CODEX_SANDBOXES else key


def split_secrets(snapshot: dict[str, Any], extra_names: Iterable[str] = ()) -> dict[str, str]:
    """Take the secrets out of a snapshot, leaving them redacted: the values in an agent's `env` of secret-looking
    names or of names the plan's `redact` lists (`[REDACTED:NAME]`), all but the origin of a `notify` webhook, and
    every credential of a known format in any text (prompts, commands, options). Returns the originals by their
    place (a JSON list of keys), for `restore_secrets`."""
    taken: dict[str, str] = {}
    extra = set(extra_names)

    def walk(node: Any, path: list[Any]) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in list(items):
            if isinstance(value, str):
                hidden = _hidden([*path, key], value, extra)
                if hidden != value:
                    taken[json.dumps([*path, key])], node[key] = value, hidden
            else:
                walk(value, [*path, key])

    walk(snapshot, [])
    return taken


def restore_secrets(snapshot: dict[str, Any], secrets: dict[str, str]) -> None:
    """Put back what `split_secrets` took, where the snapshot still holds it as it was redacted."""
    for place, original in secrets.items():
        *path, key = json.loads(place)
        node: Any = snapshot
        for step in path:
            node = node[step] if isinstance(node, dict | list) else None
        if isinstance(node, dict | list) and node[key] == _hidden([*path, key], original, ()):
            node[key] = original


def _hidden(path: list[Any], value: str, extra: Iterable[str]) -> str:
    """`value` as the snapshot keeps it at `path`."""
    named = len(path) == 5 and path[0] == "agents" and path[2:4] == ["options", "env"]
    if named and value and (SECRET_NAME.search(str(path[4])) or path[4] in extra):
        return f"[REDACTED:{path[4]}]"
    if len(path) == 3 and path[0] == "notify" and path[2] == "webhook" and isinstance(path[1], int):
        return hidden_url(value, f"notify[{path[1] + 1}].webhook")  # its token is in its path or query
    return FORMAT_REDACTOR(value)
