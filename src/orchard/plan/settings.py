"""Plan-wide settings: base, parallel, defaults and agents (the top level of a YAML plan or orchard.yaml)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from orchard.core.model import (
    COMPAT_MODES,
    DEFAULT_ADD_DEPTH,
    DEFAULT_GATE_BATCH,
    DEFAULT_GATE_TIMEOUT_S,
    DEFAULT_MAX_ADDED,
    DEFAULT_PARALLEL,
    ESTIMATE_MODES,
    EXECUTORS,
    NETWORK_MODES,
    NO_ENVIRONMENT,
    NO_LIMITS,
    PRIORITY_MODES,
    AgentSpec,
    Environment,
    Gate,
    Limits,
    Notify,
)
from orchard.plan import fields as f
from orchard.plan.agents import defined, read_agents, unknown_agents
from orchard.plan.environment import read_environment
from orchard.plan.notify import read_notify
from orchard.plan.raw import INVALID, Problems, RawPlan

TOP_LEVEL_KEYS = frozenset({"base", "parallel", "budget_usd", "redact", "sandbox", "network", "environment",
                            "limits", "preflight", "integration_verify", "integration_timeout",
                            "integration_batch", "priority_mode", "compat", "max_added_tasks", "max_add_depth",
                            "estimates", "notify", "executor", "defaults", "agents", "tracks", "tasks"})
GATE_KEYS = ("integration_verify", "integration_timeout", "integration_batch")
LIMIT_KEYS: Mapping[str, Callable[[Any], Any]] = {"max_load": f.load_per_core, "min_free_memory": f.size,
                                                  "min_free_disk": f.size}
CONFIG_KEYS = TOP_LEVEL_KEYS - {"tasks"}
_TASKS_HINT = (
    "'tasks' is not allowed here: in a plan directory every .md or .json file is a task "
    "(to use this file's task list, load the file itself)"
)


@dataclass
class Settings:
    """The checked plan-wide settings; invalid parts fall back to built-in defaults."""

    base: str | None = None
    parallel: int = DEFAULT_PARALLEL
    budget_usd: float | None = None
    redact: tuple[str, ...] = ()
    sandbox: str = "auto"
    network: str = "host"
    environment: Environment = NO_ENVIRONMENT
    limits: Limits = NO_LIMITS
    preflight: str = "auto"
    gate: Gate | None = None
    priority_mode: str = "tiebreak"
    compat: str = ""  # "" where the plan does not say
    defaults: dict[str, Any] = field(default_factory=dict)  # coerced, by plan field name; no 'agent'
    raw_defaults: dict[str, Any] = field(default_factory=dict)  # the valid ones as written (`Plan.defaults`)
    max_added_tasks: int = DEFAULT_MAX_ADDED
    max_add_depth: int = DEFAULT_ADD_DEPTH
    estimates: str = "learned"
    notify: tuple[Notify, ...] = ()
    executor: str = "local"
    default_agent: str | tuple[str, ...] | None = None
    agents: dict[str, AgentSpec] = field(default_factory=dict)
    declared_agents: set[str] = field(default_factory=set)  # includes agents whose entry is invalid


def read_settings(raw: RawPlan) -> Settings:
    """Check and coerce the top-level keys of a plan."""
    config, file, problems = raw.config, raw.config_file, raw.problems
    hints = {} if "tasks" in raw.config_keys else {"tasks": _TASKS_HINT}
    problems.check_keys(config, raw.config_keys, file, hints=hints)
    settings = Settings()
    if config.get("base") is not None:
        settings.base = _valid(problems.coerce(f.string, config["base"], file, field="base"), None)
    if config.get("parallel") is not None:
        parallel = problems.coerce(f.at_least(1), config["parallel"], file, field="parallel")
        settings.parallel = _valid(parallel, DEFAULT_PARALLEL)
    if config.get("redact") is not None:
        settings.redact = _valid(problems.coerce(f.string_list, config["redact"], file, field="redact"), ())
    if config.get("budget_usd") is not None:
        settings.budget_usd = _valid(problems.coerce(f.money, config["budget_usd"], file, field="budget_usd"), None)
    if config.get("sandbox") is not None:
        settings.sandbox = _valid(problems.coerce(f.sandbox_mode, config["sandbox"], file, field="sandbox"), "auto")
    if config.get("network") is not None:
        network = problems.coerce(partial(f.choice, NETWORK_MODES), config["network"], file, field="network")
        settings.network = _valid(network, "host")
    if config.get("environment") is not None:
        settings.environment = read_environment(config["environment"], file, problems, over=NO_ENVIRONMENT)
    if config.get("limits") is not None:
        settings.limits = _read_limits(config["limits"], file, problems)
    if config.get("preflight") is not None:
        preflight = problems.coerce(f.preflight_mode, config["preflight"], file, field="preflight")
        settings.preflight = _valid(preflight, "auto")
    settings.gate = _read_gate(config, file, problems)
    if config.get("priority_mode") is not None:
        mode = problems.coerce(partial(f.choice, PRIORITY_MODES), config["priority_mode"], file, field="priority_mode")
        settings.priority_mode = _valid(mode, "tiebreak")
    if config.get("compat") is not None:
        compat = problems.coerce(partial(f.choice, COMPAT_MODES), config["compat"], file, field="compat")
        settings.compat = _valid(compat, "")
    if config.get("estimates") is not None:
        mode = problems.coerce(partial(f.choice, ESTIMATE_MODES), config["estimates"], file, field="estimates")
        settings.estimates = _valid(mode, "learned")
    if config.get("notify") is not None:
        settings.notify = read_notify(config["notify"], file, problems)
    if config.get("executor") is not None:
        executor = problems.coerce(partial(f.choice, EXECUTORS), config["executor"], file, field="executor")
        settings.executor = _valid(executor, "local")
    for key in ("max_added_tasks", "max_add_depth"):
        if config.get(key) is not None:
            setattr(settings, key, _valid(problems.coerce(f.at_least(0), config[key], file, field=key),
                                          getattr(settings, key)))
    settings.agents, settings.declared_agents = read_agents(config.get("agents"), file, problems)
    read_defaults(config.get("defaults"), file, problems, settings)
    return settings


def _read_gate(config: Mapping[str, Any], file: str, problems: Problems) -> Gate | None:
    """`integration_verify` (with `integration_timeout` and `integration_batch`): the merge gate, or None."""
    given = {key: config[key] for key in GATE_KEYS if config.get(key) is not None}
    if not given:
        return None
    verify = problems.coerce(f.verify, given.get("integration_verify"), file, field="integration_verify")
    timeout = problems.coerce(partial(f.duration, positive=True),
                              given.get("integration_timeout", DEFAULT_GATE_TIMEOUT_S), file,
                              field="integration_timeout")
    batch = problems.coerce(f.at_least(1), given.get("integration_batch", DEFAULT_GATE_BATCH), file,
                            field="integration_batch")
    if verify is None:
        other = next(key for key in GATE_KEYS if key in given)
        problems.add(file, f"'{other}' needs 'integration_verify', the command that checks each candidate",
                     field="integration_verify")
    if INVALID in (verify, timeout, batch) or verify is None:
        return None
    return Gate(verify=verify, timeout_s=timeout, batch=batch)


def _read_limits(value: Any, file: str, problems: Problems) -> Limits:
    """`limits: {max_load, min_free_memory, min_free_disk}`: what must be left for a new attempt to start."""
    if not isinstance(value, Mapping):
        problems.add(file, f"expected a mapping of limit → value, got {f.describe(value)}", field="limits")
        return NO_LIMITS
    problems.check_keys(value, LIMIT_KEYS, file, prefix="limits.")
    found = {key: problems.coerce(coercer, value[key], file, field=f"limits.{key}")
             for key, coercer in LIMIT_KEYS.items() if value.get(key) is not None}
    return Limits(**{key: v for key, v in found.items() if v is not INVALID})


def read_defaults(value: Any, file: str, problems: Problems, settings: Settings) -> None:
    """Coerce `defaults:` into settings.defaults and settings.default_agent."""
    if value is None:
        return
    if not isinstance(value, Mapping):
        problems.add(file, f"expected a mapping of task field → default, got {f.describe(value)}", field="defaults")
        return
    hints = {key: f"'{key}' cannot have a default" for key in f.NO_DEFAULT_FIELDS}
    problems.check_keys(value, f.DEFAULT_FIELDS, file, prefix="defaults.", hints=hints)
    for key, coercer in f.TASK_COERCERS.items():
        if key not in f.DEFAULT_FIELDS or key not in value or (value[key] is None and key != "verify"):
            continue
        coerced = problems.coerce(coercer, value[key], file, field=f"defaults.{key}")
        if coerced is not INVALID:
            settings.defaults[key] = coerced
            settings.raw_defaults[key] = value[key]
    agent = settings.defaults.pop("agent", None)
    for name in unknown_agents(agent, settings.declared_agents):
        problems.add(
            file, f"unknown agent '{name}' (defined: {defined(settings.declared_agents)})", field="defaults.agent"
        )
    settings.default_agent = agent


def _valid(value: Any, fallback: Any) -> Any:
    """`value` unless it is INVALID."""
    return fallback if value is INVALID else value
