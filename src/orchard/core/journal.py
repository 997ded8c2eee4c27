"""The run journal, the engine's port to durable state: one method per state transition, and the records it keeps.

`RunJournal` is what the engine, crash recovery and the CLI call; nothing else changes run, task or attempt state.
Each transition writes its records and its journal event in one transaction, then tells observers. `Records` is
where a journal keeps them: SQLite (`orchard.store.Store`) or memory (`orchard.testing.MemoryStore`); the one
implementation of the transitions, `core.transitions.Journal`, runs over either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from orchard.core.events import OrchardEvent
from orchard.core.model import MergeOutcome, Outcome, Plan, RunStatus
from orchard.core.plan_diff import Reload
from orchard.core.records import LOCAL_HOST, AttemptRecord, ControlRequest, RunRecord, TaskRecord

Observer = Callable[[OrchardEvent], None]


@dataclass(frozen=True)
class Counts:
    """The scheduler's counters for a task, recorded with each of its status changes."""

    attempts: int
    failures: int


@dataclass(frozen=True)
class AttemptStart:
    """An attempt about to run its agent: where, on what, from which commit, logging where."""

    task_id: str
    number: int
    agent: str
    branch: str
    worktree: str
    start_commit: str
    log_path: str
    slot: int | None = None  # its resources (a resume tears a dead session's attempt down with them)
    port: int | None = None
    host: str = LOCAL_HOST  # the machine it runs on: this one, or a cluster node (its name)
    token: str = ""  # the random hex string naming the attempt (internal: never shown in the JSON documents)


@dataclass(frozen=True)
class AgentExit:
    """How the agent process ended and what it reported spending (recorded before any commit or verify)."""

    exit_code: int | None
    signal: int | None
    duration_s: float
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    session_id: str | None = None
    summary: str = ""  # the agent's own account of what it did (redacted and capped when recorded)


@dataclass(frozen=True)
class VerifyRun:
    """One run of a task's verify command; `feedback` (for the next attempt) when it failed."""

    passed: bool
    exit_code: int | None
    duration_s: float
    tail: str = ""
    feedback: str | None = None


@dataclass(frozen=True)
class Verdict:
    """How an attempt ended, decided once: the outcome, why, the commit taken, and feedback for a retry (None keeps
    what is recorded, e.g. a verify failure's)."""

    outcome: Outcome
    detail: str = ""
    end_commit: str | None = None
    feedback: str | None = None


class Records(Protocol):
    """Where a journal keeps runs, tasks, attempts and events. Writes happen only inside `transaction()`."""

    def transaction(self, *, durable: bool = False) -> AbstractContextManager[None]:
        """One atomic unit; a nested one is a savepoint (its failure undoes only itself). A `durable` one survives
        a power cut once it returns (so does the transaction a durable savepoint is part of)."""
        ...

    def add_run(self, run: RunRecord, plan: Plan, tasks: Sequence[TaskRecord]) -> None: ...

    def save_run(self, run: RunRecord) -> None: ...

    def save_task(self, task: TaskRecord) -> None: ...

    def add_attempt(self, attempt: AttemptRecord) -> int:
        """Store a new attempt and return its id (the record's own `id` is ignored)."""
        ...

    def save_attempt(self, attempt: AttemptRecord) -> None: ...

    def add_event(self, event: OrchardEvent, agent: str | None) -> int: ...

    def run(self, run_id: str | None = None) -> RunRecord:
        """The named run, or the latest; `NotRecorded` if there is none."""
        ...

    def runs(self) -> list[RunRecord]: ...

    def plan(self, run_id: str) -> Plan: ...

    def tasks(self, run_id: str) -> list[TaskRecord]: ...

    def task(self, run_id: str, task_id: str) -> TaskRecord: ...

    def attempts(self, run_id: str, task_id: str | None = None) -> list[AttemptRecord]: ...

    def attempt(self, attempt_id: int) -> AttemptRecord: ...

    def events(self, run_id: str, after_id: int = 0, task_id: str | None = None) -> list[tuple[int, dict[str, Any]]]:
        """(id, the event as its JSON object) in journal order."""
        ...

    def event_times(self, run_id: str) -> list[tuple[str, float]]:
        """(type, ts) of every event of a run, in order."""
        ...

    def save_plan(self, run_id: str, plan: Plan) -> None:
        """Replace the run's plan snapshot (live control changed its limits or agents; its tasks stay)."""
        ...

    def add_tasks(self, tasks: Sequence[TaskRecord]) -> None:
        """Store the records of tasks added to a run (`orchard add`)."""
        ...

    def add_request(self, request: ControlRequest) -> int:
        """Store a live-control request and return its id (the record's own `id` is ignored)."""
        ...

    def close_request(self, request_id: int, *, result: str, applied_at: float) -> None: ...

    def requests(self, run_id: str, *, open_only: bool = False) -> list[ControlRequest]:
        """The run's requests in the order they were made; `open_only`: those not carried out yet."""
        ...


class RunJournal(Protocol):
    """Every state transition of one run. Each writes its records and event atomically, then tells observers."""

    run_id: str

    # ---- reading -----------------------------------------------------------------------------------------------
    @property
    def plan(self) -> Plan: ...

    def run(self) -> RunRecord: ...

    def task(self, task_id: str) -> TaskRecord: ...

    def tasks(self) -> list[TaskRecord]: ...

    def attempts(self, task_id: str | None = None) -> list[AttemptRecord]: ...

    def open_attempts(self) -> list[AttemptRecord]: ...

    def last_event_ts(self) -> float | None: ...

    def count_events(self, event_type: str) -> int: ...

    def events(self) -> list[dict[str, Any]]: ...

    def summary(self) -> dict[str, Any]: ...

    def subscribe(self, observer: Observer) -> None: ...

    def atomic(self, *, durable: bool = False) -> AbstractContextManager[None]:
        """Group several transitions into one transaction; their events go out after it commits. A `durable` one
        survives a power cut once it returns."""
        ...

    # ---- the run -------------------------------------------------------------------------------------------------
    def run_started(self, *, plan: Plan, base: str, base_commit: str, integration_branch: str, parallel: int,
                    pid: int, environment: dict[str, str] | None = None) -> None: ...

    def run_resumed(self, *, pid: int, integration_tip: str) -> None: ...

    def noted(self, text: str, *, level: str = "info", attention: bool = False) -> None: ...

    def cancel_requested(self) -> None: ...

    def control_requested(self, kind: str, data: str, *, detail: str) -> int: ...

    def open_requests(self) -> list[ControlRequest]: ...

    def control_applied(self, request: ControlRequest, result: str, *, plan: Plan | None = None,
                        parallel: int | None = None, parent: str | None = None) -> None: ...

    def plan_reloaded(self, reload: Reload, *, source: str) -> None: ...

    def run_held(self, reason: str) -> None: ...

    def queue_changed(self, *, waiting: int, running: int, free: int, paused: int, held: str,
                      eta: float | None = None) -> None: ...

    def preflight_checked(self, command: str, *, outcome: str, duration_s: float, detail: str = "") -> None: ...

    def run_finished(self, status: RunStatus, *, reason: str) -> dict[str, Any]: ...

    # ---- tasks: the scheduler's decisions ------------------------------------------------------------------------
    def task_queued(self, task_id: str, *, counts: Counts, reason: str = "") -> None: ...

    def task_paused(self, task_id: str, *, counts: Counts, until: float | None, reason: str = "") -> None: ...

    def task_started(self, task_id: str, *, counts: Counts, branch: str) -> None: ...

    def task_verifying(self, task_id: str, *, counts: Counts) -> None: ...

    def task_merging(self, task_id: str, *, counts: Counts) -> None: ...

    def task_merged(self, task_id: str, *, counts: Counts) -> None: ...

    def task_failed(self, task_id: str, *, counts: Counts, reason: str = "") -> None: ...

    def task_conflicted(self, task_id: str, *, counts: Counts, reason: str = "") -> None: ...

    def task_blocked(self, task_id: str, *, counts: Counts, reason: str = "") -> None: ...

    def task_cancelled(self, task_id: str, *, counts: Counts | None = None, reason: str = "cancelled") -> None: ...

    def task_reset(self, task_id: str) -> None: ...

    # ---- attempts ------------------------------------------------------------------------------------------------
    def attempt_started(self, start: AttemptStart) -> int: ...

    def agent_spawned(self, attempt_id: int, pid: int) -> None: ...

    def agent_exited(self, attempt_id: int, exited: AgentExit) -> None: ...

    def agent_active(self, task_id: str, number: int, text: str) -> None: ...

    def agent_output(self, task_id: str, number: int, stream: str, line: str) -> None: ...

    def setup_started(self, attempt_id: int, command: str) -> None: ...

    def setup_finished(self, attempt_id: int, *, passed: bool, skipped: bool, duration_s: float,
                       detail: str = "") -> None: ...

    def teardown_finished(self, attempt_id: int, *, passed: bool, duration_s: float, detail: str = "",
                          recovered: bool = False) -> None: ...

    def verify_finished(self, attempt_id: int, run: VerifyRun) -> None: ...

    def attempt_finished(self, attempt_id: int, verdict: Verdict) -> None: ...

    def attempt_not_started(self, task_id: str, number: int, outcome: Outcome, detail: str) -> None: ...

    def attempt_abandoned(self, attempt_id: int, *, detail: str, finished_at: float) -> None: ...

    def internal_error(self, task_id: str, text: str) -> None: ...

    # ---- the merge queue -----------------------------------------------------------------------------------------
    def merge_finished(self, task_id: str, outcome: MergeOutcome, *, commit: str | None = None,
                       conflicts: tuple[str, ...] = (), feedback: str = "", tip: str | None = None,
                       error: str = "") -> None: ...

    def merge_recovered(self, task_id: str, *, commit: str, tip: str) -> None: ...

    def task_warned(self, task_id: str, text: str, *, others: tuple[str, ...] = ()) -> None: ...

    def check_started(self, check: int, *, tasks: tuple[str, ...], candidate: str, tip: str) -> None: ...

    def check_finished(self, check: int, *, tasks: tuple[str, ...], passed: bool, duration_s: float,
                       merged: Mapping[str, str], failed: tuple[str, ...], inferred: bool = False,
                       tip: str | None = None, tail: str = "", blamed_for: str = "",
                       feedback: str = "") -> None: ...
