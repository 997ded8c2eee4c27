"""Plan ⇄ plain JSON-able dicts, so a run keeps the exact plan it started with (resume never re-reads the file)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, fields
from typing import Any

from orchard.core.model import CODEX_SANDBOXES, AgentSpec, Plan, Task
from orchard.core.redact import FORMAT_REDACTOR, SECRET_NAME

_TASK_FIELDS = {f.name for f in fields(Task)}


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
        "tracks": {k: list(v) for k, v in plan.tracks.items()},
        "agents": {
            name: {"type": a.type, "max_parallel": a.max_parallel, "options": _plain(a.options)}
            for name, a in plan.agents.items()
        },
        "tasks": [_plain(asdict(t)) for t in plan.tasks],
    }


def _frozen(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """Rebuild the Plan saved by `plan_to_dict`."""
    from types import MappingProxyType

    tasks = [Task(**{k: _frozen(v) for k, v in t.items() if k in _TASK_FIELDS}) for t in data["tasks"]]
    agents = {
        name: AgentSpec(name, a["type"], a.get("max_parallel"),
                        MappingProxyType({_option_name(k, v): _frozen(v) for k, v in a.get("options", {}).items()}))
        for name, a in data["agents"].items()
    }
    return Plan.build(tasks, agents, tracks={k: tuple(v) for k, v in data.get("tracks", {}).items()},
                      base=data.get("base"), parallel=int(data.get("parallel", 4)),
                      source=str(data.get("source", "<plan>")), budget_usd=data.get("budget_usd"),
                      redact=tuple(data.get("redact", ())), sandbox=str(data.get("sandbox", "auto")),
                      network=str(data.get("network", "host")))


def _option_name(key: str, value: Any) -> str:
    """An option's name in this version: codex's own `sandbox` (read-only, workspace-write …) is `codex_sandbox` now
    that `sandbox` is orchard's, in snapshots taken before."""
    return "codex_sandbox" if key == "sandbox" and value in CODEX_SANDBOXES else key


def split_secrets(snapshot: dict[str, Any], extra_names: Iterable[str] = ()) -> dict[str, dict[str, str]]:
    """Take the secrets out of a snapshot's agent `env` blocks (a secret-looking name, one the plan's `redact`
    lists, or a value of a known credential format), leaving `[REDACTED:NAME]`; returns them, by agent and name."""
    extra, taken = set(extra_names), {}
    for agent, spec in snapshot.get("agents", {}).items():
        env = spec.get("options", {}).get("env")
        if not isinstance(env, dict):
            continue
        secret = {name: str(value) for name, value in env.items() if value and (
            SECRET_NAME.search(name) or name in extra or FORMAT_REDACTOR(str(value)) != str(value))}
        if secret:
            env.update({name: f"[REDACTED:{name}]" for name in secret})
            taken[agent] = secret
    return taken


def restore_secrets(snapshot: dict[str, Any], secrets: dict[str, dict[str, str]]) -> None:
    """Put back what `split_secrets` took, for the names the snapshot still holds redacted."""
    for agent, values in secrets.items():
        env = snapshot.get("agents", {}).get(agent, {}).get("options", {}).get("env")
        if isinstance(env, dict):
            env.update({name: value for name, value in values.items() if env.get(name) == f"[REDACTED:{name}]"})
