"""The `agents:` section: named agent entries checked against their kind and frozen into AgentSpecs."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

from orchard.core.model import (
    AGENT_KIND_OPTIONS,
    CLAUDE_PERMISSION_MODES,
    CODEX_SANDBOXES,
    COMMON_AGENT_OPTIONS,
    GEMINI_APPROVAL_MODES,
    NETWORK_MODES,
    PROMPT_VIA,
    AgentSpec,
)
from orchard.plan import fields as f
from orchard.plan.raw import Problems

_OPTION_COERCERS: Mapping[str, f.Coercer] = MappingProxyType(
    {
        "env": f.env_map,
        "env_pass": f.env_pass,
        "fallback": f.string_list,
        "track": f.string,
        "stall_timeout": partial(f.duration, positive=True),
        "rate_limit_backoff": partial(f.duration, positive=True),
        "command": f.argv,
        "prompt_via": partial(f.choice, PROMPT_VIA),
        "binary": f.string,
        "model": f.string,
        "args": f.extra_args,
        "max_turns": f.at_least(1),
        "permission_mode": partial(f.choice, CLAUDE_PERMISSION_MODES),
        "allowed_tools": f.string_list,
        "resume_session": f.boolean,
        "codex_sandbox": partial(f.choice, CODEX_SANDBOXES),
        "sandbox": f.sandbox_mode,
        "network": partial(f.choice, NETWORK_MODES),
        "writable": f.absolute_paths,
        "edit_format": f.string,
        "approval_mode": partial(f.choice, GEMINI_APPROVAL_MODES),
        "pricing": f.pricing,
        "force": f.boolean,
    }
)
_REQUIRED: Mapping[str, tuple[str, ...]] = MappingProxyType({"command": ("command",)})
_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType({"command": {"prompt_via": "file"}})
_ALL_OPTIONS = COMMON_AGENT_OPTIONS.union(*AGENT_KIND_OPTIONS.values())


def known_kinds() -> str:
    """The known agent kinds, comma separated, for messages."""
    return ", ".join(sorted(AGENT_KIND_OPTIONS))


def read_agents(value: Any, file: str, problems: Problems) -> tuple[dict[str, AgentSpec], set[str]]:
    """(valid agent specs by name, every declared agent name) from the raw `agents:` value."""
    specs: dict[str, AgentSpec] = {}
    declared: set[str] = set()
    if value is None:
        return specs, declared
    if not isinstance(value, Mapping):
        problems.add(file, f"expected a mapping of agent name → settings, got {f.describe(value)}", field="agents")
        return specs, declared
    for name, entry in value.items():
        if not isinstance(name, str) or not name.strip():
            problems.add(file, f"agent names must be non-empty strings, got {f.show(name)}", field="agents")
            continue
        declared.add(name)
        spec = read_agent(name, entry, file, problems)
        if spec is not None:
            specs[name] = spec
    _check_fallbacks(specs, declared, file, problems)
    return specs, declared


def agent_from_flags(name: str, kind: str, max_parallel: int | None, options: tuple[str, ...]) -> AgentSpec:
    """The agent entry `orchard agents add` describes (`KEY=VALUE` options, values read as YAML), checked as a
    plan's would be; ValueError saying what is wrong. Secrets never come this way: a command line is visible to
    every process of the machine."""
    import yaml

    entry: dict[str, Any] = {"type": kind}
    if max_parallel is not None:
        entry["max_parallel"] = max_parallel
    for text in options:
        key, eq, raw = text.partition("=")
        if not eq:
            raise ValueError(f"--option {text}: expected KEY=VALUE")
        if key.strip() == "env":
            raise ValueError("--option env=…: a command line is no place for secrets; give the variables to "
                             "orchard's own environment and name them with --option env_pass=NAME")
        try:
            entry[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ValueError(f"--option {text}: not a YAML value ({exc})") from None
    problems = Problems()
    spec = read_agent(name, entry, "orchard agents add", problems)
    if problems.items or spec is None:
        raise ValueError("; ".join(str(p) for p in problems.items) or f"agent {name}: not a valid entry")
    return spec


def read_agent(name: str, entry: Any, file: str, problems: Problems) -> AgentSpec | None:
    """One AgentSpec, or None after recording what is wrong with it."""
    where = f"agents.{name}"
    before = len(problems.items)
    if not isinstance(entry, Mapping):
        problems.add(file, f"expected a mapping with at least 'type', got {f.describe(entry)}", field=where)
        return None
    kind = _read_kind(entry.get("type"), file, problems, where)
    options_allowed = _ALL_OPTIONS if kind is None else COMMON_AGENT_OPTIONS | AGENT_KIND_OPTIONS[kind]
    problems.check_keys(entry, {"type", "max_parallel", *options_allowed}, file, prefix=where + ".")
    max_parallel = None
    if entry.get("max_parallel") is not None:
        max_parallel = problems.coerce(f.at_least(1), entry["max_parallel"], file, field=where + ".max_parallel")
    options = dict(_DEFAULTS.get(kind or "", {}))
    for key, raw in entry.items():
        if isinstance(key, str) and key in options_allowed:
            options[key] = problems.coerce(_OPTION_COERCERS.get(key, f.freeze), raw, file, field=f"{where}.{key}")
    for key in _REQUIRED.get(kind or "", ()):
        if key not in entry:
            problems.add(file, f"a {kind} agent needs '{key}'", field=f"{where}.{key}")
    if len(problems.items) > before or kind is None:
        return None
    return AgentSpec(name=name, type=kind, max_parallel=max_parallel, options=MappingProxyType(options))


KIND_ALIASES: Mapping[str, str] = MappingProxyType({"claude_code": "claude"})  # as the workstream guide writes it


def _read_kind(kind: Any, file: str, problems: Problems, where: str) -> str | None:
    """The agent kind named by `type` (an alias read as its kind), or None after recording why it is missing or
    unknown."""
    kind = KIND_ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if kind is None:
        problems.add(file, f"missing 'type' (known types: {known_kinds()})", field=where + ".type")
        return None
    if not isinstance(kind, str) or kind not in AGENT_KIND_OPTIONS:
        problems.add(file, f"unknown agent type {f.show(kind)} (known types: {known_kinds()})", field=where + ".type")
        return None
    return kind


def _check_fallbacks(specs: dict[str, AgentSpec], declared: set[str], file: str, problems: Problems) -> None:
    """Every fallback must name another declared agent."""
    for name, spec in specs.items():
        for other in spec.option("fallback", ()):
            if other == name:
                problems.add(file, "an agent cannot fall back to itself", field=f"agents.{name}.fallback")
            elif other not in declared:
                problems.add(
                    file,
                    f"fallback names unknown agent '{other}' (defined: {defined(declared)})",
                    field=f"agents.{name}.fallback",
                )


def unknown_agents(agent: str | tuple[str, ...] | None, declared: set[str] | Mapping[str, Any]) -> list[str]:
    """The names in a task's `agent` (one name or a preference list) that no agent entry defines."""
    names = () if agent is None else (agent,) if isinstance(agent, str) else agent
    return [name for name in names if name not in declared]


def defined(names: set[str] | Mapping[str, Any]) -> str:
    """The defined agent names for messages, or 'none'."""
    return ", ".join(sorted(names)) or "none"
