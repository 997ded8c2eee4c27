"""What every part of a live run shares: repository, store, plan, paths, the event fan-out and live processes."""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from orchard.core.events import OrchardEvent, redacted
from orchard.core.model import Plan
from orchard.core.redact import NO_REDACTION, Redactor
from orchard.runtime.layout import Layout, integration_branch, task_branch
from orchard.runtime.pool import WorktreePool
from orchard.runtime.process import kill_group
from orchard.store import Store
from orchard.vcs import Repo

log = logging.getLogger("orchard")
Observer = Callable[[OrchardEvent], None]


@dataclass
class RunContext:
    """One run's shared handles. Lives in the engine's event loop thread."""

    repo: Repo
    store: Store
    layout: Layout
    plan: Plan
    run_id: str
    observers: list[Observer] = field(default_factory=list)
    procs: dict[str, int] = field(default_factory=dict)  # task id → process group of its live agent/verify
    stopping: bool = False
    grace_s: float = 5.0
    redactor: Redactor = NO_REDACTION
    integration_tip: str = ""  # orchard's record; the ref is put back to it if an agent moves it
    ref_lock: threading.Lock = field(default_factory=threading.Lock)
    width: int = 1  # tasks at once: also how many finished worktrees the pool parks during the run
    recovered_merges: frozenset[str] = frozenset()  # tasks a dead session left merging: maybe merged already

    @functools.cached_property
    def pool(self) -> WorktreePool:
        return WorktreePool(self.repo, self.layout)

    @property
    def integration_branch(self) -> str:
        return integration_branch(self.run_id)

    @property
    def integration_ref(self) -> str:
        return "refs/heads/" + self.integration_branch

    def task_branch(self, task_id: str) -> str:
        return task_branch(self.run_id, task_id)

    def emit(self, event: OrchardEvent, journal: bool = True) -> None:
        """Journal the event, then tell every observer; an observer that raises is dropped, never the run."""
        event = redacted(event, self.redactor)
        if journal:
            agent = self.plan.task(event.task_id).agent if event.task_id and event.task_id in self.plan else None
            self.store.append_event(event, agent)
        for observer in list(self.observers):
            try:
                observer(event)
            except Exception:
                log.exception("event observer %r failed and was disabled", observer)
                self.observers.remove(observer)

    def now(self) -> float:
        return time.time()

    def signal_all(self, sig: int) -> None:
        """Send `sig` to every live agent / verify process group."""
        for pgid in list(self.procs.values()):
            kill_group(pgid, sig)

    def interrupt(self, hard: bool) -> None:
        """First interrupt: stop gracefully; second: kill at once."""
        self.stopping = True
        self.signal_all(signal.SIGKILL if hard else signal.SIGTERM)
