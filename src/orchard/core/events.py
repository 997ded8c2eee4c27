"""Typed progress events: what the engine tells observers (dashboard, NDJSON, journal, library callbacks).

Each event has a stable `type` name and a flat `to_dict()`; these names are part of the `--json` contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, ClassVar

from orchard.core.model import MergeOutcome, Outcome, RunStatus, TaskStatus
from orchard.core.records import LOCAL_HOST, elsewhere


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, kw_only=True)
class OrchardEvent:
    """Base: a run id, a wall-clock timestamp, and a stable `type` name."""

    type: ClassVar[str] = "event"
    run_id: str
    ts: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ts"] = iso(self.ts)
        return {"type": self.type, **data}

    @property
    def task_id(self) -> str | None:
        return None

    def message(self) -> str:
        """One human line for logs and the journal."""
        return self.type


@dataclass(frozen=True, kw_only=True)
class RunStarted(OrchardEvent):
    """A session of the run starts (`resumed`: a later one); `statuses` is every task's status as it starts (task
    id → status, in plan order) and `cost_usd` what its attempts cost so far, so a view that joins here (a
    resumed session's dashboard) counts what earlier sessions merged and spent."""

    type: ClassVar[str] = "run.started"
    base: str
    base_commit: str
    integration_branch: str
    tasks: int
    parallel: int
    resumed: bool = False
    statuses: dict[str, TaskStatus] = field(default_factory=dict)
    cost_usd: float = 0.0

    def message(self) -> str:
        verb = "resumed" if self.resumed else "started"
        return f"run {self.run_id} {verb}: {self.tasks} tasks, parallel {self.parallel}, base {self.base}"


@dataclass(frozen=True, kw_only=True)
class TaskEvent(OrchardEvent):
    """An event about one task."""

    task: str

    @property
    def task_id(self) -> str | None:
        return self.task


@dataclass(frozen=True, kw_only=True)
class TaskStatusChanged(TaskEvent):
    type: ClassVar[str] = "task.status"
    status: TaskStatus
    attempt: int = 0
    reason: str = ""
    until: str | None = None  # for `paused`: when the agent is expected back (ISO 8601 UTC)

    def message(self) -> str:
        return f"{self.status}" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True, kw_only=True)
class AttemptStarted(TaskEvent):
    type: ClassVar[str] = "attempt.started"
    attempt: int
    agent: str
    branch: str
    worktree: str
    start_commit: str
    pid: int | None = None
    host: str = LOCAL_HOST  # the machine it runs on: this one, or a cluster node (its name)

    def message(self) -> str:
        return f"attempt {self.attempt} started with agent {self.agent}{elsewhere(self.host)} in {self.worktree}"


@dataclass(frozen=True, kw_only=True)
class AgentActivity(TaskEvent):
    type: ClassVar[str] = "agent.activity"
    attempt: int
    text: str

    def message(self) -> str:
        return self.text


@dataclass(frozen=True, kw_only=True)
class AgentOutput(TaskEvent):
    """One line an agent wrote, with its stream: opt-in (`--events output`, `output=True`), redacted like the logs,
    cut at `OUTPUT_LINE_MAX` characters; published to observers, never journaled (the attempt's log has it all)."""

    type: ClassVar[str] = "agent.output"
    attempt: int
    stream: str  # stdout | stderr
    line: str

    def message(self) -> str:
        return f"{self.stream}: {self.line}"


OUTPUT_LINE_MAX = 4096


def bounded_line(line: str) -> str:
    """An output line for `AgentOutput`: without its newline, cut past `OUTPUT_LINE_MAX` with a marker."""
    line = line.rstrip("\r\n")
    if len(line) <= OUTPUT_LINE_MAX:
        return line
    return line[:OUTPUT_LINE_MAX] + f" …[{len(line) - OUTPUT_LINE_MAX} more characters]"


@dataclass(frozen=True, kw_only=True)
class AttemptFinished(TaskEvent):
    type: ClassVar[str] = "attempt.finished"
    attempt: int
    outcome: Outcome
    exit_code: int | None = None
    signal: int | None = None
    duration_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    detail: str = ""

    def message(self) -> str:
        code = f" exit {self.exit_code}" if self.exit_code is not None else ""
        sig = f" signal {self.signal}" if self.signal else ""
        return f"attempt {self.attempt}: {self.outcome}{code}{sig}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True, kw_only=True)
class SetupStarted(TaskEvent):
    """The task's environment setup starts in its worktree (before the agent)."""

    type: ClassVar[str] = "setup.started"
    attempt: int
    command: str

    def message(self) -> str:
        return f"setup: {self.command}"


@dataclass(frozen=True, kw_only=True)
class SetupFinished(TaskEvent):
    """Setup ended: passed, failed (`detail`), or `skipped` because the reused worktree's setup is current."""

    type: ClassVar[str] = "setup.finished"
    attempt: int
    passed: bool
    duration_s: float
    skipped: bool = False
    detail: str = ""

    def message(self) -> str:
        if self.skipped:
            return "setup skipped: its inputs are as when this worktree last ran it"
        return f"setup {'done' if self.passed else 'failed'} ({self.duration_s:.1f}s)"


@dataclass(frozen=True, kw_only=True)
class TeardownFinished(TaskEvent):
    """The environment's teardown ran after the attempt (its failure never changes the attempt's outcome)."""

    type: ClassVar[str] = "teardown.finished"
    attempt: int
    passed: bool
    duration_s: float
    detail: str = ""
    recovered: bool = False  # run by `orchard resume` for an attempt a dead session left

    def message(self) -> str:
        after = " (for the attempt the last session left)" if self.recovered else ""
        return f"teardown {'done' if self.passed else 'failed'} ({self.duration_s:.1f}s){after}" + (
            f": {self.detail}" if self.detail and not self.passed else "")


@dataclass(frozen=True, kw_only=True)
class VerifyFinished(TaskEvent):
    type: ClassVar[str] = "verify.finished"
    attempt: int
    passed: bool
    exit_code: int | None
    duration_s: float
    tail: str = ""

    def message(self) -> str:
        return f"verify {'passed' if self.passed else 'failed'} (exit {self.exit_code}, {self.duration_s:.1f}s)"


@dataclass(frozen=True, kw_only=True)
class MergeFinished(TaskEvent):
    type: ClassVar[str] = "merge.finished"
    result: MergeOutcome
    commit: str | None = None
    conflicts: tuple[str, ...] = field(default_factory=tuple)

    def message(self) -> str:
        if self.result is MergeOutcome.CONFLICT:
            return "merge conflict on " + ", ".join(self.conflicts)
        if self.result is MergeOutcome.ERROR:
            return "merge failed"
        already = " (already merged)" if self.result is MergeOutcome.ALREADY else ""
        return f"merged as {self.commit[:10] if self.commit else '?'}{already}"


@dataclass(frozen=True, kw_only=True)
class TaskWarning(TaskEvent):
    """Something about a task's result the user should know, which did not stop it: a result that removed lines
    `others` (tasks of the run) had added and merged (`protect_merged: warn`)."""

    type: ClassVar[str] = "task.warning"
    text: str
    others: tuple[str, ...] = field(default_factory=tuple)

    def message(self) -> str:
        return self.text


@dataclass(frozen=True, kw_only=True)
class RunNote(OrchardEvent):
    """A run-level notice (warning, interruption, landing); `attention` when the user must act on it (a lock in
    their repository, a refused landing, their checkout changed by an agent): `notify: needs_attention` tells them."""

    type: ClassVar[str] = "run.note"
    level: str = "info"
    text: str = ""
    attention: bool = False

    def message(self) -> str:
        return self.text


@dataclass(frozen=True, kw_only=True)
class RunHeld(OrchardEvent):
    """New attempts wait for the machine (`reason` names the exceeded limits), or go on again (`reason` "")."""

    type: ClassVar[str] = "run.held"
    reason: str = ""

    def message(self) -> str:
        return self.reason or "no longer held: the machine is within its limits"


@dataclass(frozen=True, kw_only=True)
class QueueChanged(OrchardEvent):
    """The run's queue, when its counts change (at most a few times a second): tasks ready and waiting for a slot,
    attempts running, free slots, tasks paused with their agent, why new attempts are held ("" when not), and
    when the run should end (`core.eta`, ISO 8601 UTC; None when not estimated)."""

    type: ClassVar[str] = "queue.changed"
    waiting: int
    running: int
    free: int
    paused: int
    held: str = ""
    eta: str | None = None

    def message(self) -> str:
        held = f" · {self.held}" if self.held else ""
        return (f"queue: waiting {self.waiting} | running {self.running} | free {self.free} | paused "
                f"{self.paused}{held}")


@dataclass(frozen=True, kw_only=True)
class ControlRequested(OrchardEvent):
    """Another process asked the run to change course (`orchard cancel TASK`, `set`, `agents add`)."""

    type: ClassVar[str] = "control.requested"
    request: int
    kind: str
    detail: str

    def message(self) -> str:
        return f"request {self.request} ({self.kind}): {self.detail}"


@dataclass(frozen=True, kw_only=True)
class ControlApplied(OrchardEvent):
    """The run's session carried a request out: what it did."""

    type: ClassVar[str] = "control.applied"
    request: int
    kind: str
    result: str

    def message(self) -> str:
        return f"request {self.request} ({self.kind}) applied: {self.result}"


@dataclass(frozen=True, kw_only=True)
class PreflightChecked(OrchardEvent):
    """A check before any agent started (`runtime.preflight`): a verify command run on the untouched base."""

    type: ClassVar[str] = "preflight.checked"
    command: str
    outcome: str  # passed | red (it failed on the base) | cannot_start (it could not run at all)
    duration_s: float = 0.0
    detail: str = ""

    def message(self) -> str:
        said = {"passed": "passes", "red": "FAILS", "cannot_start": "cannot run"}.get(self.outcome, self.outcome)
        return f"preflight: verify `{self.command}` {said} on the base ({self.duration_s:.1f}s)"


@dataclass(frozen=True, kw_only=True)
class CheckStarted(OrchardEvent):
    """The gate (`runtime.gate`) began checking a candidate: the integration tip plus `tasks` merged in this order,
    as `candidate` (a commit the integration branch moves to only if the check passes)."""

    type: ClassVar[str] = "check.started"
    check: int  # 1, 2 … over the whole run
    tasks: tuple[str, ...]
    candidate: str
    tip: str  # the green tip it builds on

    def message(self) -> str:
        return f"gate: checking {', '.join(self.tasks)} on {self.tip[:10]} as {self.candidate[:10]}"


@dataclass(frozen=True, kw_only=True)
class CheckFinished(OrchardEvent):
    """A candidate's check ended: `merged` moved the integration branch (when it passed), `failed` were blamed
    (`inferred`: their tree with the new tip is one that failed already, so no check of their own ran)."""

    type: ClassVar[str] = "check.finished"
    check: int
    tasks: tuple[str, ...]
    passed: bool
    duration_s: float = 0.0
    merged: tuple[str, ...] = field(default_factory=tuple)
    failed: tuple[str, ...] = field(default_factory=tuple)
    inferred: bool = False
    tail: str = ""

    def message(self) -> str:
        said = "passed" if self.passed else "FAILED"
        blamed = f"; blamed: {', '.join(self.failed)}" if self.failed else ""
        return f"gate: check {self.check} of {', '.join(self.tasks)} {said} ({self.duration_s:.1f}s){blamed}"


@dataclass(frozen=True, kw_only=True)
class RunFinished(OrchardEvent):
    type: ClassVar[str] = "run.finished"
    status: RunStatus
    summary: dict[str, Any] = field(default_factory=dict)

    def message(self) -> str:
        return f"run {self.run_id} {self.status}"


def redacted(event: OrchardEvent, redact: Callable[[str], str]) -> OrchardEvent:
    """A copy of `event` with every text field (and every text in a tuple field, every task id a `statuses` map
    names) passed through `redact`; enum fields are names, not text, and the summary's numbers need none."""
    changes: dict[str, Any] = {}
    for f in fields(event):
        value = getattr(event, f.name)
        if isinstance(value, str) and not isinstance(value, Enum):
            changes[f.name] = redact(value)
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            changes[f.name] = tuple(redact(v) for v in value)
        elif isinstance(value, dict) and all(isinstance(v, Enum) for v in value.values()):
            changes[f.name] = {redact(k): v for k, v in value.items()}  # task ids, as the `task` fields are
    return replace(event, **changes)
