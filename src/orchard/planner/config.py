"""Where `orchard draft` finds its agents, which one plans, and how that one is held to reading.

The agents come from a YAML file with an `agents:` mapping in the plan format (an existing plan serves, or an
`orchard.yaml`, the settings file a prompts directory already uses), by default `orchard.yaml` at the repository
root. The drafted plan gets that `agents:` section as written, so it loads on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from orchard.core.model import AgentSpec
from orchard.errors import PlanError, UsageError
from orchard.plan.agents import defined, read_agents
from orchard.plan.raw import INVALID, Problems
from orchard.plan.readers import parse_yaml

DEFAULT_AGENTS_FILE = "orchard.yaml"
READ_TOOLS = ("Read", "Glob", "Grep")  # claude's tools that read and never write
# Kinds with a mode that cannot write: aider always edits, and cursor's no-force mode is unverified here.
PLANNER_KINDS = ("claude", "codex", "command", "gemini")


@dataclass(frozen=True)
class AgentsConfig:
    """The agents a drafted plan may use: the raw `agents:` mapping (copied into the plan as written) and the
    checked entries."""

    source: str
    raw: Mapping[str, Any]
    specs: Mapping[str, AgentSpec]
    default_agent: str | None = None  # the file's `defaults.agent`, when it names one agent


def agents_file(explicit: Path | None, repo_root: Path) -> Path:
    """`--agents FILE`, else `orchard.yaml` at the repository root; UsageError when there is neither."""
    if explicit is not None:
        if not explicit.is_file():
            raise UsageError(f"--agents {explicit}: no such file")
        return explicit
    found = repo_root / DEFAULT_AGENTS_FILE
    if found.is_file():
        return found
    raise UsageError(f"no agents to plan with: give --agents FILE (a YAML file with an `agents:` mapping as in a "
                     f"plan, an existing plan serves) or add {DEFAULT_AGENTS_FILE} at the repository root")


def read_agents_config(path: Path) -> AgentsConfig:
    """The agents of the YAML file at `path`, checked as a plan's are; PlanError naming every problem."""
    file = str(path)
    problems = Problems()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--agents {path}: cannot read it: {exc}") from None
    data = parse_yaml(text, file, problems)
    if data is not INVALID and not (isinstance(data, Mapping) and isinstance(data.get("agents"), Mapping)
                                    and data["agents"]):
        problems.add(file, "expected a mapping with a non-empty `agents:` mapping of agent name → settings",
                     field="agents")
    if problems.items:
        raise PlanError(problems.items)
    specs, _ = read_agents(data["agents"], file, problems)
    if problems.items:
        raise PlanError(problems.items)
    defaults = data.get("defaults")
    named = defaults.get("agent") if isinstance(defaults, Mapping) else None
    return AgentsConfig(file, MappingProxyType(dict(data["agents"])), MappingProxyType(specs),
                        named if isinstance(named, str) and named in specs else None)


def choose_planner(config: AgentsConfig, name: str | None) -> AgentSpec:
    """The agent that writes the plan: `--agent NAME`, else the only one; UsageError otherwise."""
    if name is None:
        if len(config.specs) > 1:
            raise UsageError(f"{config.source} defines several agents: choose the planner with --agent NAME "
                             f"(defined: {defined(config.specs)})")
        name = next(iter(config.specs))
    spec = config.specs.get(name)
    if spec is None:
        raise UsageError(f"--agent {name}: unknown agent (defined in {config.source}: {defined(config.specs)})")
    if spec.type not in PLANNER_KINDS:
        raise UsageError(f"--agent {name}: a {spec.type} agent cannot plan read-only; orchard draft plans with "
                         f"{', '.join(PLANNER_KINDS)} agents (the plan's tasks may still use {spec.type})")
    return spec


# Extra arguments that would undo a kind's read-only settings (a flag, or a `-c` override naming the setting).
ESCAPES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "claude": ("--tools", "--allowedTools", "--allowed-tools", "--permission-mode", "--dangerously-skip-permissions"),
    "codex": ("--sandbox", "-s", "--full-auto", "--yolo", "--dangerously-bypass-approvals-and-sandbox",
              "sandbox_mode"),
    "gemini": ("--approval-mode", "--yolo", "-y"),
})


def read_only(spec: AgentSpec) -> AgentSpec:
    """`spec` with its kind's read-only settings forced over the entry's own; UsageError when the entry's `args`
    would undo them.

    claude: only Read, Glob and Grep exist for it (`--tools`) and `dontAsk` denies anything else without asking;
    codex: its `read-only` sandbox; gemini: `default` approvals, where headless gemini registers no shell or write
    tool. A command agent is confined by `runtime.sandbox` instead (`planner.agent`)."""
    escapes = [str(a) for a in spec.option("args", ()) or () if _escapes(str(a), ESCAPES.get(spec.type, ()))]
    if escapes:
        raise UsageError(f"--agent {spec.name}: its args ({', '.join(escapes)}) would let the planner write; plan "
                         "with an entry without them")
    options = dict(spec.options)
    if spec.type == "claude":
        tools = ",".join(READ_TOOLS)
        options.update(permission_mode="dontAsk", allowed_tools=list(READ_TOOLS),
                       args=[*(options.get("args") or ()), "--tools", tools])
    elif spec.type == "codex":
        options["codex_sandbox"] = "read-only"
    elif spec.type == "gemini":
        options["approval_mode"] = "default"
    return replace(spec, options=MappingProxyType(options))


def task_agent(config: AgentsConfig, planner: AgentSpec) -> str:
    """What a drafted task that names no agent runs on: the only agent, else the file's `defaults.agent`, else the
    planner."""
    if len(config.specs) == 1:
        return next(iter(config.specs))
    return config.default_agent or planner.name


def _escapes(arg: str, flags: tuple[str, ...]) -> bool:
    """Whether one extra argument is (or sets) one of `flags`: `--flag`, `--flag=value`, or a `-c` value naming
    the setting."""
    return any(arg == f or arg.startswith(f + "=") or (not f.startswith("-") and f in arg) for f in flags)
