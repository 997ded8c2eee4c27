"""What every part of a live run shares: orchard's repository and the user's, the run's journal, paths, orchard's
record of the integration tip, and the run's live processes."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchard.core.journal import RunJournal
from orchard.core.model import Outcome, Plan
from orchard.core.redact import NO_REDACTION, Redactor
from orchard.core.steering import Extender
from orchard.runtime.layout import Layout, task_branch
from orchard.runtime.pool import WorktreePool
from orchard.runtime.process import kill_group
from orchard.runtime.resources import TaskResources
from orchard.runtime.unconfined import OutsideWatch
from orchard.vcs import Repo, kill_running_git
from orchard.vcs.private import OwnRepository

if TYPE_CHECKING:
    from orchard.runtime.executor import Executor

log = logging.getLogger("orchard")


@dataclass
class Integration:
    """orchard's own record of the integration branch's tip: attempts start from it, merges extend it, and the ref
    is put back to it if an agent moves it. Merges and checks hold `lock` (they run in worker threads)."""

    ref: str
    tip: str
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class LiveProcesses:
    """The process group of each task's live agent or verify command, and whether the run is stopping."""

    groups: dict[str, int] = field(default_factory=dict)
    stopping: bool = False
    grace_s: float = 5.0
    # Set by the first interrupt. Every agent, setup and verify process watches it (`run_process(stop=)`): SIGTERM,
    # then SIGKILL after the grace period, so a TERM the child could not act on (one that came while bwrap and its
    # `env` still ignored it, or before the child existed) cannot leave it running. Teardown does not watch it.
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # One per task, for `orchard cancel TASK`: set by its cancel and by the run's interrupt. A task's agent, setup
    # and verify watch this one.
    task_stops: dict[str, asyncio.Event] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)

    def stop_for(self, task_id: str) -> asyncio.Event:
        """What the task's processes watch: already set when the run is stopping or the task was cancelled."""
        event = self.task_stops.setdefault(task_id, asyncio.Event())
        if self.stopping or task_id in self.cancelled:
            event.set()
        return event

    def cancel(self, task_id: str) -> None:
        """`orchard cancel TASK`: its live process gets SIGTERM, then SIGKILL after the grace period."""
        self.cancelled.add(task_id)
        self.stop_for(task_id).set()

    def halted(self, task_id: str) -> Outcome | None:
        """Why the task's attempt was stopped from outside, if it was: the run's interrupt or the task's cancel."""
        if task_id in self.cancelled:
            return Outcome.CANCELLED
        return Outcome.INTERRUPTED if self.stopping else None

    def started(self, task_id: str, pgid: int) -> None:
        self.groups[task_id] = pgid

    def ended(self, task_id: str) -> None:
        self.groups.pop(task_id, None)

    def interrupt(self, hard: bool) -> None:
        """First interrupt: stop agents (SIGTERM, SIGKILL after the grace period); second: kill them, and any git
        command, at once. Called in the event loop's thread (the signal handler, the engine)."""
        self.stopping = True
        self.stop.set()
        for event in self.task_stops.values():
            event.set()
        if hard:  # a graceful stop lets git finish what it does (each call has its own time limit)
            for pgid in list(self.groups.values()):
                kill_group(pgid, signal.SIGKILL)
            kill_running_git()


@dataclass
class Host:
    """The machine's side of attempts (`runtime.workspace`): orchard's repository here and its paths, the worktree
    pool, the live processes, the redactor of what leaves a process and the environment setup and verify start
    from. The run's journal and store are not here: what happens on a host reaches them through a sink."""

    own: OwnRepository
    layout: Layout
    pool: WorktreePool
    processes: LiveProcesses
    redactor: Redactor
    environ: dict[str, str]
    watch: OutsideWatch | None = None  # set when some agent runs unconfined here (`runtime.unconfined`)

    @property
    def git(self) -> Repo:
        return self.own.repo

    @property
    def user_repo(self) -> Repo:
        return self.own.user


@dataclass
class RunContext:
    """One session's shared handles. Lives in the engine's event loop thread.

    Everything of a run happens in orchard's own repository (`git`); the user's (`user_repo`) receives published
    refs and, on request, a land."""

    own: OwnRepository
    layout: Layout
    journal: RunJournal
    integration: Integration
    redactor: Redactor = NO_REDACTION
    width: int = 1  # tasks at once: also how many finished worktrees the pool parks during the run
    processes: LiveProcesses = field(default_factory=LiveProcesses)
    resources: TaskResources = field(default_factory=TaskResources)  # the running tasks' slots and ports
    output_events: bool = False  # every line agents write goes to observers too (`AgentOutput`)
    extend: Extender | None = None  # reads the tasks `orchard add` adds (`plan.extend`); None: adding is refused
    executor: Executor | None = None  # where attempts' workspace halves run (`runtime.executor`); None: here

    @property
    def run_id(self) -> str:
        return self.journal.run_id

    @property
    def plan(self) -> Plan:
        return self.journal.plan

    @property
    def git(self) -> Repo:
        """orchard's own repository: worktrees, task branches and the integration ref as the merge queue moves it."""
        return self.own.repo

    @property
    def user_repo(self) -> Repo:
        return self.own.user

    @functools.cached_property
    def environ(self) -> dict[str, str]:
        """The environment setup, verify and teardown start from: orchard's own, with the variables recorded at
        `orchard run` over it, so a resume from another shell runs them as the run began."""
        return {**os.environ, **self.journal.run().recorded_environment()}

    @functools.cached_property
    def pool(self) -> WorktreePool:
        kept = [*self.plan.environment.keep, *(k for t in self.plan.tasks if t.environment for k in t.environment.keep)]
        return WorktreePool(self.git, self.layout, tuple(dict.fromkeys(kept)))

    @functools.cached_property
    def host(self) -> Host:
        """This machine as the host of the run's attempts and checks."""
        return Host(self.own, self.layout, self.pool, self.processes, self.redactor, self.environ)

    def task_branch(self, task_id: str) -> str:
        return task_branch(self.run_id, task_id)


def note_repaired(ctx: RunContext, repaired: list[str], when: str) -> None:
    """Tell the user what an agent changed in orchard's repository (and orchard put back), naming the tasks whose
    attempts were open: without a sandbox any of their agents could have."""
    if repaired:
        shown = ", ".join(repaired[:40]) + (f" (+{len(repaired) - 40} more)" if len(repaired) > 40 else "")
        # read only now, when something was changed: an attempt is open from its start until its verdict
        running = ", ".join(sorted({a.task_id for a in ctx.journal.open_attempts()})) or "none"
        ctx.journal.noted(f"an agent had changed orchard's git directory; restored {when} (tasks with an attempt "
                          f"open then: {running}): {shown}", level="warning")
