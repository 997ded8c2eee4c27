"""The plan model: tasks, agents, statuses and attempt outcomes as immutable values and enums.

Everything here is data; the rules that act on it live in `core.graph` and `core.scheduler`.
"""

from __future__ import annotations

import copyreg
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from orchard.core.sizes import format_size


def frozen_mapping(values: dict[Any, Any]) -> Mapping[Any, Any]:
    """`values` behind a read-only proxy (what an unpickled proxy is rebuilt with)."""
    return MappingProxyType(values)


def _reduce_proxy(proxy: MappingProxyType[Any, Any]) -> tuple[Any, tuple[dict[Any, Any]]]:
    return frozen_mapping, (dict(proxy),)


# The values below freeze their mappings in read-only proxies; pickled as the dict they show, a plan, a task or an
# agent entry can travel to another process or machine as it is (an attempt's job: `runtime.workspace`).
copyreg.pickle(MappingProxyType, _reduce_proxy)

DEFAULT_TIMEOUT_S = 30 * 60.0
DEFAULT_ESTIMATE_S = 10 * 60.0
DEFAULT_RETRIES = 1
DEFAULT_PARALLEL = 4
DEFAULT_AGENT_NAME = "default"

TASK_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")


def valid_task_id(value: str) -> bool:
    """Letters, digits, `.`, `_`, `-`; 1–64 chars; not starting with `-` or `.`; no `..` (unsafe in refs)."""
    return bool(TASK_ID_RE.match(value)) and ".." not in value and not value.endswith((".lock", "."))


class TaskStatus(StrEnum):
    """Where a task is in its life; the names are part of the `status --json` contract."""

    PENDING = "pending"  # waiting for dependencies (or its track predecessor)
    QUEUED = "queued"  # ready, waiting for a free slot
    RUNNING = "running"  # an agent is working on it
    VERIFYING = "verifying"  # the verify command runs
    MERGING = "merging"  # waiting for / in the merge queue
    MERGED = "merged"
    FAILED = "failed"
    CONFLICT = "conflict"
    BLOCKED = "blocked"  # a dependency ended without merging
    CANCELLED = "cancelled"
    PAUSED = "paused"  # its agent is rate limited until a reset time

    @property
    def terminal(self) -> bool:
        """It will not change again in this run (a `retry` may start it afresh)."""
        return self in TERMINAL

    @property
    def active(self) -> bool:
        """An agent, a verify command or the merge queue is working on it."""
        return self in ACTIVE

    @property
    def failed(self) -> bool:
        """It ended without merging because of its own work or a dependency's: failed, conflict or blocked.

        Cancelled is not failed (the user stopped it). This one definition counts failures in the summary, the
        dashboard and the run's status (and so its exit code)."""
        return self in FAILED

    @property
    def own_failure(self) -> bool:
        """It failed by its own work (failed or conflict), not because a dependency did (blocked): what the
        summary's and the dashboard's `failed` count, beside a separate `blocked` count."""
        return self in (TaskStatus.FAILED, TaskStatus.CONFLICT)

    @property
    def waiting(self) -> bool:
        """Not started yet in this attempt: waiting for dependencies, a slot or its agent."""
        return self in WAITING


TERMINAL = frozenset(
    {TaskStatus.MERGED, TaskStatus.FAILED, TaskStatus.CONFLICT, TaskStatus.BLOCKED, TaskStatus.CANCELLED}
)
FAILED = frozenset({TaskStatus.FAILED, TaskStatus.CONFLICT, TaskStatus.BLOCKED})
ACTIVE = frozenset({TaskStatus.RUNNING, TaskStatus.VERIFYING, TaskStatus.MERGING})
WAITING = frozenset({TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.PAUSED})


class RunStatus(StrEnum):
    """How a run stands; the names are part of the `status --json` contract, and each has the exit code of the
    command that ended the run so (`orchard run`, `resume`, `retry`)."""

    RUNNING = "running"  # a session is working on it (or died without saying so)
    COMPLETED = "completed"  # every task merged
    FAILED = "failed"  # every task ended, some failed (see `TaskStatus.failed`)
    BUDGET_EXHAUSTED = "budget_exhausted"  # the run's budget stopped new work
    INTERRUPTED = "interrupted"  # stopped by a signal; resumable
    CANCELLED = "cancelled"  # `orchard cancel`

    @property
    def exit_code(self) -> int:
        return _RUN_EXIT_CODES[self]

    @property
    def resumable(self) -> bool:
        """`orchard resume` may continue it (a failed run only when something is left to do, or with a retry; a
        cancelled one with its cancelled tasks queued again)."""
        return self is not RunStatus.COMPLETED


_RUN_EXIT_CODES = {RunStatus.RUNNING: 0, RunStatus.COMPLETED: 0, RunStatus.FAILED: 1, RunStatus.BUDGET_EXHAUSTED: 1,
                   RunStatus.INTERRUPTED: 130, RunStatus.CANCELLED: 130}


class MergeOutcome(StrEnum):
    """What the merge queue did with one task's result."""

    MERGED = "merged"  # a merge commit on the integration branch
    ALREADY = "already"  # the result was in the integration branch already (it changed nothing)
    CONFLICT = "conflict"
    ERROR = "error"  # git failed for another reason


class Outcome(StrEnum):
    """How one attempt ended: the same vocabulary for every agent kind."""

    SUCCESS = "success"
    AGENT_ERROR = "agent_error"  # the agent exited non-zero / reported an error
    MAX_TURNS = "max_turns"
    AUTH = "auth"  # credentials missing or rejected: retrying will not help
    RATE_LIMITED = "rate_limited"  # pauses the agent; does not use up a retry
    API_ERROR = "api_error"
    TIMEOUT = "timeout"  # the task's wall-clock timeout expired
    STALLED = "stalled"  # no output for the stall timeout
    CRASHED = "crashed"  # killed by a signal
    NO_CHANGES = "no_changes"  # the agent changed nothing and the task does not allow that
    VERIFY_FAILED = "verify_failed"
    REJECTED = "rejected"  # the task branch does not descend from the attempt's start
    SETUP_FAILED = "setup_failed"  # orchard could not prepare the worktree / start the agent
    INTERRUPTED = "interrupted"  # the run was interrupted while the attempt ran
    TAMPERED = "tampered"  # an unconfined agent changed the user's git directory: not retried
    CANCELLED = "cancelled"  # `orchard cancel TASK` stopped it: not retried
    LOST = "lost"  # the machine that ran it, or orchard's host there, went away: run again, no retry used (bounded)


@dataclass(frozen=True)
class AgentSpec:
    """One named agent entry of a plan: its kind and the options that kind understands."""

    name: str
    type: str
    max_parallel: int | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


# Options each agent kind accepts (beyond `type` and `max_parallel`), for validation and did-you-mean.
COMMON_AGENT_OPTIONS = frozenset({"env", "env_pass", "fallback", "stall_timeout", "rate_limit_backoff", "sandbox",
                                  "network", "writable", "track"})
_VENDOR = frozenset({"binary", "model", "args"})
AGENT_KIND_OPTIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "command": frozenset({"command", "prompt_via"}),
        "claude": _VENDOR | {"max_turns", "permission_mode", "allowed_tools", "resume_session"},
        "codex": _VENDOR | {"codex_sandbox", "resume_session", "pricing"},
        "aider": _VENDOR | {"edit_format"},
        "gemini": _VENDOR | {"approval_mode", "resume_session", "pricing"},
        "cursor": _VENDOR | {"force", "resume_session"},
    }
)
CLAUDE_PERMISSION_MODES = ("default", "acceptEdits", "plan", "auto", "dontAsk", "bypassPermissions")
CODEX_SANDBOXES = ("read-only", "workspace-write", "danger-full-access")
SANDBOX_MODES = ("auto", "bwrap", "none")  # orchard's own: `runtime.sandbox`
NETWORK_MODES = ("host", "none")
# `preflight`: what orchard checks before any agent starts (`runtime.preflight`). auto: verify on the base when any
# task has a verify; check: only where the verify's Python imports the project from; strict: as auto, and that
# check's warning stops the run
PREFLIGHT_MODES = ("auto", "check", "verify", "strict", "off")
# `priority_mode`: `tiebreak` orders ready tasks by critical path first, priority only between equals; `strict` by
# priority first (an urgent task starts before any lower one that is ready), then critical path
PRIORITY_MODES = ("tiebreak", "strict")
# `compat`: `workstreams` also keeps the workstream guide's `.state/orchestration.db` and `logs/orchestrator.log`
# (`runtime.compat`); the default for a plan read from a workstreams directory, else `none`
COMPAT_MODES = ("none", "workstreams")
EXECUTORS = ("local", "ray")  # `executor`: where attempts run (ray: on a cluster at --ray-address or $RAY_ADDRESS)
ESTIMATE_MODES = ("learned", "declared")  # `estimates`: declared turns learning from history off
GEMINI_APPROVAL_MODES = ("default", "auto_edit", "yolo", "plan")
PROMPT_VIA = ("file", "stdin", "arg")
# `context`: what a task's prompt is told of each task it depends on (`core.context`): nothing, the files its merged
# change touched and its merge commit, or those and the agent's own summary of what it did
CONTEXT_MODES = ("none", "files", "summary")


@dataclass(frozen=True)
class Environment:
    """What a task's worktree gets besides the tracked files (`environment:` of a plan; a task's own overrides any
    part). `include`: git-ignore patterns of untracked files copied from the user's checkout (never committed)."""

    include: tuple[str, ...] = ()
    setup: tuple[tuple[str, ...], ...] = ()
    setup_inputs: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    teardown: tuple[tuple[str, ...], ...] = ()
    setup_timeout_s: float = 600.0
    env: tuple[tuple[str, str], ...] = ()  # (name, value) pairs: a frozen, JSON-able mapping
    ports: int = 0
    source: str = ""  # where setup and teardown came from when not the plan: "conductor.json" (`plan.conductor`)


NO_ENVIRONMENT = Environment()


@dataclass(frozen=True)
class Limits:
    """What the machine must have left for a new attempt to start (`limits:` of a plan, or CLI flags): load per
    core at most `max_load`, at least `min_free_memory` bytes available and `min_free_disk` bytes free. None: no
    such limit. Running attempts are never stopped for them."""

    max_load: float | None = None
    min_free_memory: int | None = None
    min_free_disk: int | None = None

    def over(self, other: Limits) -> Limits:
        """These limits where set, `other`'s elsewhere (a flag over the plan's value)."""
        return Limits(max_load=other.max_load if self.max_load is None else self.max_load,
                      min_free_memory=other.min_free_memory if self.min_free_memory is None else self.min_free_memory,
                      min_free_disk=other.min_free_disk if self.min_free_disk is None else self.min_free_disk)

    def exceeded(self, *, load_per_core: float | None, free_memory: int | None, free_disk: int | None) -> str:
        """Why a new attempt may not start on a machine in this state ("held: …", every exceeded limit named), or
        "" (a value not measured exceeds nothing)."""
        reasons = []
        if self.max_load is not None and load_per_core is not None and load_per_core > self.max_load:
            reasons.append(f"load {load_per_core:.2f} per core > {self.max_load:g}")
        if self.min_free_memory is not None and free_memory is not None and free_memory < self.min_free_memory:
            reasons.append(f"memory {format_size(free_memory)} free < {format_size(self.min_free_memory)}")
        if self.min_free_disk is not None and free_disk is not None and free_disk < self.min_free_disk:
            reasons.append(f"disk {format_size(free_disk)} free < {format_size(self.min_free_disk)}")
        return "held: " + ", ".join(reasons) if reasons else ""

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_load, self.min_free_memory, self.min_free_disk))


NO_LIMITS = Limits()
DEFAULT_GATE_TIMEOUT_S = 30 * 60.0
DEFAULT_GATE_BATCH = 8


@dataclass(frozen=True)
class Gate:
    """The plan's merge gate (`integration_verify`, `runtime.gate`): results reach the integration branch only in a
    candidate (the tip plus up to `batch` of them) on which `verify` passed, within `timeout_s`."""

    verify: tuple[str, ...]
    timeout_s: float = DEFAULT_GATE_TIMEOUT_S
    batch: int = DEFAULT_GATE_BATCH


class NotifyEvent(StrEnum):
    """What a `notify:` entry may be told of (`core.notify` maps the journal's events to these)."""

    RUN_FINISHED = "run_finished"
    TASK_FAILED = "task_failed"  # failed or conflict (not blocked: the dependency's failure was told)
    PAUSED = "paused"  # an agent's rate limit paused tasks
    BUDGET_EXHAUSTED = "budget_exhausted"  # the run's budget stops new work
    NEEDS_ATTENTION = "needs_attention"  # something the user must look at (`core.notify.attention`)


DEFAULT_NOTIFY_TIMEOUT_S = 5.0
DEFAULT_NOTIFY_RETRIES = 2


@dataclass(frozen=True)
class Notify:
    """One `notify:` entry: the `events` it is told of, and how, exactly one of: a `command` (argv whose
    placeholders are filled in per element), a `webhook` (an http(s) URL the notification is POSTed to as JSON) or
    `desktop` (notify-send). Each delivery waits at most `timeout_s`, and is tried `retries` more times."""

    events: tuple[NotifyEvent, ...]
    command: tuple[str, ...] | None = None
    webhook: str | None = None
    desktop: bool = False
    timeout_s: float = DEFAULT_NOTIFY_TIMEOUT_S
    retries: int = DEFAULT_NOTIFY_RETRIES

    @property
    def channel(self) -> str:
        """How it delivers: command, webhook or desktop."""
        return "command" if self.command is not None else "webhook" if self.webhook is not None else "desktop"


DEFAULT_RETRY_BACKOFF_S = 10.0
DEFAULT_MAX_ADDED = 100  # tasks `orchard add` may add to one run
DEFAULT_ADD_DEPTH = 3


@dataclass(frozen=True)
class Task:
    """One unit of work for one agent. `prompt` is the resolved text (inline or read from `prompt_file`)."""

    id: str
    prompt: str
    agent: str
    prompt_file: str | None = None
    name: str | None = None
    depends_on: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    verify: tuple[str, ...] | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    priority: int = 0
    track: str | None = None
    estimate_s: float = DEFAULT_ESTIMATE_S
    allow_empty: bool = False
    budget_usd: float | None = None  # no new attempt once the task's attempts cost this much
    # what of orchard's environment the verify command sees beyond the basics (agent-written code runs there)
    verify_env_pass: str | tuple[str, ...] = ()
    environment: Environment | None = None  # the task's own, merged over the plan's; None: the plan's
    on_conflict: str = "rerun"  # rerun: from the new tip, told the paths; resolve: given git's conflict to resolve
    protect_merged: str = "warn"  # warn | reject | off: a result removing lines other tasks of the run merged
    retry_on: tuple[Outcome, ...] = ()  # permanent failures (`core.retrying`) this task retries all the same
    retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S  # the wait after a first transient failure, doubling
    agents: tuple[str, ...] = ()  # `agent: [a, b]`: the agents it may start on, in order (`agent` is the first)
    context: str = "summary"  # CONTEXT_MODES: what its prompt is told of the tasks it depends on
    estimated: str = "declared"  # where `estimate_s` came from: declared | default | history (`runtime.estimates`)

    @property
    def choices(self) -> tuple[str, ...]:
        """The agents it may start on, in the plan's order of preference."""
        return self.agents or (self.agent,)


@dataclass(frozen=True)
class Plan:
    """A validated, immutable plan. Build it through `orchard.plan.load` (or `Plan.build` for code)."""

    tasks: tuple[Task, ...]
    agents: Mapping[str, AgentSpec]
    tracks: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    base: str | None = None
    parallel: int = DEFAULT_PARALLEL
    source: str = "<plan>"
    budget_usd: float | None = None  # no new attempt once the run's attempts cost this much
    redact: tuple[str, ...] = ()  # more environment variable names whose values are secrets
    sandbox: str = "auto"  # SANDBOX_MODES: how agents, verify and setup are confined (an agent may say otherwise)
    network: str = "host"  # NETWORK_MODES: under bwrap, "none" gives them no network at all
    environment: Environment = NO_ENVIRONMENT
    limits: Limits = NO_LIMITS
    preflight: str = "auto"  # PREFLIGHT_MODES
    gate: Gate | None = None  # None: each result merges once its own verify passed
    priority_mode: str = "tiebreak"  # PRIORITY_MODES
    compat: str = "none"  # COMPAT_MODES
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # `defaults:` as written
    added: tuple[str, ...] = ()  # tasks `orchard add` added to the run, in order (`plan.extend`)
    max_added_tasks: int = DEFAULT_MAX_ADDED
    max_add_depth: int = DEFAULT_ADD_DEPTH  # an added task's children's children … at most this deep
    estimates: str = "learned"  # ESTIMATE_MODES: tasks without an `estimate` take one from history (`core.estimates`)
    notify: tuple[Notify, ...] = ()  # who is told of the run's failures and end (`runtime.notify`)
    executor: str = "local"  # EXECUTORS: where attempts' workspace halves run (`runtime.executor`)
    _index: Mapping[str, Task] = field(default_factory=lambda: MappingProxyType({}), repr=False, compare=False)
    # Values derived from this plan (ranks, file conflicts …), filled in once by `core.graph`: a Plan never changes.
    _derived: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @staticmethod
    def build(
        tasks: list[Task] | tuple[Task, ...],
        agents: Mapping[str, AgentSpec],
        *,
        tracks: Mapping[str, tuple[str, ...]] | None = None,
        base: str | None = None,
        parallel: int = DEFAULT_PARALLEL,
        source: str = "<plan>",
        budget_usd: float | None = None,
        redact: tuple[str, ...] = (),
        sandbox: str = "auto",
        network: str = "host",
        environment: Environment = NO_ENVIRONMENT,
        limits: Limits = NO_LIMITS,
        preflight: str = "auto",
        gate: Gate | None = None,
        priority_mode: str = "tiebreak",
        compat: str = "none",
        defaults: Mapping[str, Any] | None = None,
        added: tuple[str, ...] = (),
        max_added_tasks: int = DEFAULT_MAX_ADDED,
        max_add_depth: int = DEFAULT_ADD_DEPTH,
        estimates: str = "learned",
        notify: tuple[Notify, ...] = (),
        executor: str = "local",
    ) -> Plan:
        """Freeze already-validated parts into a Plan (validation lives in `orchard.plan`)."""
        return Plan(
            tasks=tuple(tasks),
            agents=MappingProxyType(dict(agents)),
            tracks=MappingProxyType({k: tuple(v) for k, v in (tracks or {}).items()}),
            base=base,
            parallel=parallel,
            source=source,
            budget_usd=budget_usd,
            redact=tuple(redact),
            sandbox=sandbox,
            network=network,
            environment=environment,
            limits=limits,
            preflight=preflight,
            gate=gate,
            priority_mode=priority_mode,
            compat=compat,
            defaults=MappingProxyType(dict(defaults or {})),
            added=tuple(added),
            max_added_tasks=max_added_tasks,
            max_add_depth=max_add_depth,
            estimates=estimates,
            notify=tuple(notify),
            executor=executor,
            _index=MappingProxyType({t.id: t for t in tasks}),
        )

    def task(self, task_id: str) -> Task:
        return self._index[task_id]

    def environment_of(self, task_id: str) -> Environment:
        """The environment a task's worktree gets: its own, else the plan's."""
        return self._index[task_id].environment or self.environment

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._index

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(t.id for t in self.tasks)
