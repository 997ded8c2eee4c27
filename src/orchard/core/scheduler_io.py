"""The scheduler's inputs (past-tense events), its outputs (actions) and its per-task bookkeeping.

Kept apart from `core.scheduler` so that module holds only decisions; everything here is plain data.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchard.core.model import Outcome, Plan, TaskStatus

S = TaskStatus


# ---- events (inputs, past tense) ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kick:
    """Start (or re-evaluate) scheduling."""


@dataclass(frozen=True)
class AttemptEnded:
    """An attempt (agent + commit + verify) finished with `outcome`; `resume_at` for a rate limit's reset time."""

    task_id: str
    outcome: Outcome
    resume_at: float | None = None
    cost_usd: float = 0.0
    setup_failed: bool = False  # the environment's setup failed: tried once more without using a retry


@dataclass(frozen=True)
class MergeEnded:
    """The merge queue finished a task: merged, or a conflict on `conflicts`; `interrupted` when a hard stop killed
    the merge (the task stays merging, for the next session)."""

    task_id: str
    merged: bool
    conflicts: tuple[str, ...] = ()
    error: str = ""  # a git failure that was not a conflict: the task fails, its agent is not run again
    interrupted: bool = False
    gate_failed: bool = False  # the gate blamed it (`integration_failed`): a failure like a failed verify


@dataclass(frozen=True)
class VerifyStarted:
    """The agent finished and the task's verify command began (display status only)."""

    task_id: str


@dataclass(frozen=True)
class Stop:
    """Start nothing new (interrupt or budget); the run ends when active work drains."""

    reason: str = "interrupted"


@dataclass(frozen=True)
class Cancel:
    """Cancel every task that is not active or finished."""


@dataclass(frozen=True)
class Sampled:
    """What the machine had left when the runtime last looked: load average per core, bytes of memory available,
    bytes free on the repository's disk (each None when not measured)."""

    load_per_core: float | None = None
    free_memory: int | None = None
    free_disk: int | None = None


@dataclass(frozen=True)
class CancelTasks:
    """`orchard cancel TASK...` (request `request`): stop those tasks, block what depends on them, go on."""

    task_ids: tuple[str, ...]
    request: int = 0


@dataclass(frozen=True)
class Replanned:
    """`orchard set` or `orchard agents add` (request `request`) gave the run new limits or agents: `plan` is the
    run's plan as it is now (same tasks), `parallel` its width. Lowering a limit never stops what runs."""

    plan: Plan
    parallel: int
    request: int = 0
    changes: tuple[str, ...] = ()  # what changed, in words, for the record


Event = Kick | AttemptEnded | VerifyStarted | MergeEnded | Stop | Cancel | Sampled | CancelTasks | Replanned


# ---- actions (outputs) ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StartAttempt:
    """Run attempt `attempt` of a task on `agent` (its own, or a fallback while its own is paused)."""

    task_id: str
    attempt: int
    agent: str
    budget_usd: float | None = None  # what the attempt may still spend, when a budget applies


@dataclass(frozen=True)
class StartMerge:
    task_id: str


@dataclass(frozen=True)
class StatusChanged:
    task_id: str
    status: TaskStatus
    reason: str = ""
    until: float | None = None  # for `paused`: when the agent is expected back


@dataclass(frozen=True)
class RunDone:
    """Nothing is active and nothing more will start. `complete` when every task reached a final status."""

    complete: bool
    reason: str = ""


@dataclass(frozen=True)
class HoldChanged:
    """New attempts are held (`reason` says which limit of the machine is exceeded), or no longer (`reason` "")."""

    reason: str


@dataclass(frozen=True)
class StopAttempt:
    """Stop the task's live attempt (its agent, setup or verify): it was cancelled."""

    task_id: str


@dataclass(frozen=True)
class Applied:
    """A live-control request was carried out: what it did, in words."""

    request: int
    result: str


Action = StartAttempt | StartMerge | StatusChanged | RunDone | HoldChanged | StopAttempt | Applied


@dataclass
class TaskState:
    """Mutable per-task bookkeeping inside the scheduler."""

    status: TaskStatus = S.PENDING
    attempts: int = 0  # attempts started
    failures: int = 0  # failures that used up a retry
    setup_failures: int = 0  # attempts whose environment setup failed (this session)
    lost: int = 0  # attempts whose machine went away (this session)


@dataclass(frozen=True)
class Restored:
    """A task's state carried over from a previous session of the same run (resume)."""

    status: TaskStatus
    attempts: int = 0
    failures: int = 0
    spent_usd: float = 0.0


