"""The journal's records of a run: the run, its tasks and their attempts, as immutable values with enum statuses.

The SQLite store and the in-memory store of `orchard.testing` both keep exactly these; strings appear only where
they are serialized (SQL, JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from orchard.core.model import Outcome, RunStatus, TaskStatus

LOCAL_HOST = "local"  # an attempt's `host` when it ran on this machine (a cluster node's is the node's name)


def elsewhere(host: str) -> str:
    """What the human views add after an attempt's agent: ` on HOST` for an attempt that ran on another machine,
    nothing for one that ran on this one (a run on one machine would say "on local" on every line)."""
    return "" if host == LOCAL_HOST else f" on {host}"


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run: where it started, its integration branch and orchard's record of that branch's tip."""

    id: str
    status: RunStatus
    base: str
    base_commit: str
    integration_branch: str
    plan_source: str
    parallel: int
    started_at: float
    finished_at: float | None = None
    pid: int | None = None
    reason: str = ""
    cancel_requested: bool = False
    integration_tip: str | None = None
    held: str = ""  # why new attempts wait for the machine (its `limits`), while they do
    baseline_red: str = ""  # JSON list of the verify commands that failed on the base before any agent ran
    environment: str = ""  # JSON object: the variables (PATH …) at `orchard run`, which setup and verify run with

    def recorded_environment(self) -> dict[str, str]:
        """The variables recorded at `orchard run` ({} for a run recorded before they were)."""
        found = json.loads(self.environment) if self.environment else {}
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}

    def red_on_base(self, verify: str) -> bool:
        """Whether `verify` (a command as `shlex.join` writes it) failed on the untouched base (`preflight`)."""
        return bool(self.baseline_red) and verify in json.loads(self.baseline_red)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task of a run: its status, counters, and what its last attempt or merge left for a retry."""

    run_id: str
    task_id: str
    position: int
    status: TaskStatus
    agent: str
    track: str | None = None
    attempts: int = 0
    failures: int = 0
    branch: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str = ""
    conflicts: str = ""
    merged_commit: str | None = None
    feedback: str = ""
    parent: str | None = None  # the task whose attempt added this one (`orchard add`), if one did


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A live-control request (`orchard cancel TASK`, `set`, `agents add`) another process wrote for a run; the
    run's session carries it out and records what it did (`applied_at`, `result`)."""

    id: int
    run_id: str
    kind: str  # cancel_tasks | set | add_agent
    data: str  # JSON: what `core.steering` reads for that kind
    created_at: float
    applied_at: float | None = None
    result: str = ""


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of one task: where it ran, how it ended, what it cost. `id` is 0 until the store assigns one."""

    id: int
    run_id: str
    task_id: str
    number: int
    agent: str
    started_at: float
    worktree: str
    start_commit: str
    log_path: str
    finished_at: float | None = None
    outcome: Outcome | None = None
    exit_code: int | None = None
    signal: int | None = None
    pid: int | None = None
    pgid: int | None = None
    end_commit: str | None = None
    detail: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    session_id: str | None = None
    slot: int | None = None  # the task's slot and first reserved port while the attempt ran (`runtime.resources`)
    port: int | None = None
    setup_s: float | None = None  # how long its environment setup took; None when no setup ran
    setup_skipped: bool = False  # the reused worktree's setup was current
    teardown_s: float | None = None  # set once its teardown ran (by the session, or by the resume after a crash)
    summary: str = ""  # the agent's own account of what it did, redacted and capped (`core.context`)
    host: str = LOCAL_HOST  # the machine it ran on: this one, or a cluster node (its name)
    token: str = ""  # the random hex string naming the attempt (internal)
