"""Queue telemetry (`queue.changed`): the scheduler's counts journaled when they change, at most once every
`INTERVAL_S`; a change inside the interval goes out when it ends, and the last counts before the run ends."""

from __future__ import annotations

import asyncio
import logging
import time

from orchard.core.eta import estimated_finish
from orchard.core.journal import RunJournal
from orchard.core.model import TaskStatus
from orchard.core.scheduler import Scheduler

INTERVAL_S = 0.25
ETA_INTERVAL_S = 5.0  # the estimate is a simulation of the rest of the run: not at every change
log = logging.getLogger("orchard")
Counts = tuple[int, int, int, int, str]  # waiting, running, free, paused, held


class QueueTelemetry:
    """Watches one scheduler for the engine; `changed()` after every event it handled."""

    def __init__(self, journal: RunJournal, sched: Scheduler) -> None:
        self.journal, self.sched = journal, sched
        self.last: Counts | None = None
        self.sent_at = float("-inf")
        self.timer: asyncio.TimerHandle | None = None
        self.eta: float | None = None
        self.eta_at = float("-inf")

    def counts(self) -> Counts:
        running = self.sched.active_count()
        return (self.sched.counts[TaskStatus.QUEUED], running, max(0, self.sched.parallel - running),
                self.sched.counts[TaskStatus.PAUSED], self.sched.hold)

    def changed(self) -> None:
        if self.timer is not None or self.counts() == self.last:
            return
        wait = self.sent_at + INTERVAL_S - time.monotonic()
        if wait <= 0:
            self._send()
        else:
            self.timer = asyncio.get_running_loop().call_later(wait, self._flush_later)

    def close(self) -> None:
        """The run ends: what changed since the last event goes out now."""
        if self.timer is not None:
            self.timer.cancel()
        self._flush()

    def _flush(self) -> None:
        self.timer = None
        if self.counts() != self.last:
            self._send()

    def _flush_later(self) -> None:
        """The timer's flush: a failure to journal (a full disk) is the next transition's to report, not a loop
        callback's traceback."""
        try:
            self._flush()
        except Exception:
            log.warning("queue telemetry could not be journaled", exc_info=True)

    def _send(self) -> None:
        self.last = counts = self.counts()
        self.sent_at = time.monotonic()
        waiting, running, free, paused, held = counts
        self.journal.queue_changed(waiting=waiting, running=running, free=free, paused=paused, held=held,
                                   eta=self._eta())

    def _eta(self) -> float | None:
        """When the run should end, simulated again at most every `ETA_INTERVAL_S`; None when it cannot be told
        (an estimate must never stop a run)."""
        if self.sent_at - self.eta_at < ETA_INTERVAL_S:
            return self.eta
        self.eta_at = self.sent_at
        try:
            self.eta = estimated_finish(self.journal.plan, self.journal.tasks(), self.journal.attempts(),
                                        parallel=self.sched.parallel, now=time.time())
        except Exception:
            log.warning("the run's finish could not be estimated", exc_info=True)
            self.eta = None
        return self.eta
