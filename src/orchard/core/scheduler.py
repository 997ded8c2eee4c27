"""The pure scheduler: `handle(event, now) -> actions`. No I/O, no clock, no awaits.

It owns every task's status. The engine (real runs), `orchard plan` estimates and the benchmark simulation all drive
this same object: they feed it past-tense events and carry out the actions it returns.

Rules: a task is ready when every dependency merged and its track predecessor finished; among ready tasks the one
with the longest estimated path to the end starts first, then higher priority, then plan order (`priority_mode:
strict`: priority first). Limits: run-wide
`parallel`, per-agent `max_parallel`, one task per track at a time, no two tasks with overlapping declared files
active together, and none starts while the machine is over one of its `limits` (load, memory, disk: `Sampled`).
Merges happen one at a time, and while `parallel` results wait for theirs no new attempt starts. With the plan's
gate every result goes to its train at once (`runtime.gate` batches them), a task merges when its candidate passed,
and new attempts wait while `parallel` plus a batch of results wait.
A task that ends without merging blocks its descendants only.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from orchard.core.feedback import INTEGRATION_FAILED
from orchard.core.graph import file_conflicts, ranks
from orchard.core.model import NO_LIMITS, Limits, Outcome, Plan, TaskStatus
from orchard.core.retrying import backoff_s, failure_class, retried
from orchard.core.scheduler_control import CANCELLED_BY_USER, LiveControl
from orchard.core.scheduler_io import (
    Action,
    Applied,
    AttemptEnded,
    Cancel,
    CancelTasks,
    Event,
    HoldChanged,
    Kick,
    MergeEnded,
    Replanned,
    Restored,
    RunDone,
    Sampled,
    StartAttempt,
    StartMerge,
    StatusChanged,
    Stop,
    StopAttempt,
    TaskState,
    VerifyStarted,
)
from orchard.core.spending import Spending

__all__ = ["Action", "Applied", "AttemptEnded", "Cancel", "CancelTasks", "Event", "HoldChanged", "Kick",
           "MergeEnded", "Replanned", "Restored", "RunDone", "Sampled", "Scheduler", "StartAttempt", "StartMerge",
           "StatusChanged", "Stop", "StopAttempt", "TaskState", "VerifyStarted"]

S = TaskStatus
BACKOFF_BASE_S = 60.0
BACKOFF_CAP_S = 30 * 60.0
MAX_LOST = 2  # attempts of one task whose machine went away, run again before the task fails as crashed


@dataclass
class Scheduler(LiveControl):
    """Event-driven decision maker for one run of one plan."""

    plan: Plan
    parallel: int
    restored: Mapping[str, Restored] = field(default_factory=dict)
    limits: Limits = NO_LIMITS  # the machine's: while one is exceeded (`Sampled`), no new attempt starts

    def __post_init__(self) -> None:
        self.parallel = max(1, self.parallel)
        self._index_graph()
        self.tasks: dict[str, TaskState] = {t.id: TaskState() for t in self.plan.tasks}
        self.counts: Counter[TaskStatus] = Counter({S.PENDING: len(self.tasks)})  # tasks by status, kept by `_move`
        self._queue: list[tuple[tuple[float, float, int], str]] = []  # sorted QUEUED/PAUSED tasks
        self._merge_queue: deque[str] = deque()
        self._merging: set[str] = set()  # one at a time, or every result in the gate's train
        self._running: set[str] = set()  # RUNNING or VERIFYING
        self._agent_running: dict[str, int] = {}
        self._running_agent: dict[str, str] = {}  # task → the agent its live attempt uses
        self._limit_streak: dict[str, int] = {}  # agent → rate limits in a row (for backoff)
        self.spending = Spending(self.plan)
        self._held: set[str] = set()  # tasks holding their declared files (active)
        self._agent_paused: dict[str, float] = {}  # agent → when its rate limit ends
        self._user_paused = self._paused_agents()  # agents `orchard set AGENT.paused=true` holds
        self._waits: dict[str, float] = {}  # task → when the backoff after its transient failure ends
        self._streaks: dict[str, int] = {}  # task → transient failures in a row
        self._kept_for: str | None = None  # the merging result whose ready dependent a free slot waits for
        self._cancelling: set[str] = set()  # running tasks `orchard cancel` named: cancelled when their attempt ends
        self._stopped: str | None = None
        self.hold = ""  # why new attempts wait for the machine (`Limits.exceeded`), or ""
        self._kicked = False  # nothing is decided before the first `Kick` (a `Sampled` may come first)
        self._done = False
        self._unfinished = len(self.tasks)
        for task_id, r in self.restored.items():
            if task_id in self.tasks:
                self._restore(task_id, r)

    def _index_graph(self) -> None:
        """What the scheduler derives from the plan's tasks: sort keys (critical path, priority, plan order), file
        conflicts, dependents, track order. Again when tasks are added (`orchard add`)."""
        rank = ranks(self.plan)
        strict = self.plan.priority_mode == "strict"  # priority before the critical path
        self._key: dict[str, tuple[float, float, int]] = {
            t.id: (float(-t.priority), -rank[t.id], i) if strict else (-rank[t.id], float(-t.priority), i)
            for i, t in enumerate(self.plan.tasks)}
        self._conflicts = file_conflicts(self.plan)
        self._dependents: dict[str, list[str]] = {t.id: [] for t in self.plan.tasks}
        for t in self.plan.tasks:
            for d in t.depends_on:
                self._dependents[d].append(t.id)
        self._track_prev: dict[str, str] = {}
        self._track_next: dict[str, str] = {}
        for members in self.plan.tracks.values():
            for before, after in itertools.pairwise(members):
                self._track_prev[after], self._track_next[before] = before, after

    def _restore(self, task_id: str, r: Restored) -> None:
        st = self.tasks[task_id]
        st.attempts, st.failures = r.attempts, r.failures
        self.spending.charge(task_id, r.spent_usd)
        if r.status.terminal:
            self._move(st, r.status)
            self._unfinished -= 1
        elif r.status is S.MERGING:
            self._move(st, S.MERGING)
            self._merge_queue.append(task_id)
            self._held.add(task_id)

    # ---- queries ----------------------------------------------------------------------------------------------
    def status(self, task_id: str) -> TaskStatus:
        return self.tasks[task_id].status

    def next_wakeup(self) -> float | None:
        """Earliest time a paused agent resumes or a task's backoff ends, if any."""
        return min((*self._agent_paused.values(), *self._waits.values()), default=None)

    @property
    def done(self) -> bool:
        return self._done

    def active_count(self) -> int:
        return len(self._running)

    # ---- events -----------------------------------------------------------------------------------------------
    def handle(self, event: Event, now: float) -> list[Action]:
        """Apply one event and return what to do next."""
        out: list[Action] = []
        if isinstance(event, AttemptEnded):
            self._attempt_ended(event, now, out)
        elif isinstance(event, MergeEnded):
            self._merge_ended(event, out)
        elif isinstance(event, Stop):
            self._stopped = self._stopped or event.reason
        elif isinstance(event, Cancel):
            self._stopped = self._stopped or "cancelled"
            self._cancel_waiting(out)
        elif isinstance(event, VerifyStarted):
            if self.tasks[event.task_id].status is S.RUNNING:
                self._set(event.task_id, S.VERIFYING, out)
        elif isinstance(event, Kick):
            self._kicked = True
            self._promote_pending(out)
        elif isinstance(event, Sampled):
            self._sampled(event, out)
        elif isinstance(event, CancelTasks):
            self._cancel_tasks(event, out)
        elif isinstance(event, Replanned):
            self._replanned(event, out)
        self._unpause(now, out)
        self._maybe_merge(out)
        self._dispatch(out)
        self._check_done(out)
        return out

    def _sampled(self, sample: Sampled, out: list[Action]) -> None:
        """Hold new attempts while the machine is over a limit; running ones go on."""
        reason = self.limits.exceeded(load_per_core=sample.load_per_core, free_memory=sample.free_memory,
                                      free_disk=sample.free_disk)
        if reason != self.hold:
            self.hold = reason
            out.append(HoldChanged(reason))

    def _promote_pending(self, out: list[Action]) -> None:
        """Queue every pending task that is ready; block those whose dependency already ended unmerged."""
        for t in self.plan.tasks:
            if self.tasks[t.id].status is not S.PENDING:
                continue
            lost = [d for d in t.depends_on if self.tasks[d].status.terminal and self.tasks[d].status is not S.MERGED]
            if lost:
                self._finish(t.id, S.BLOCKED, out, reason=f"dependency '{lost[0]}' did not merge")
            elif self._ready(t.id):
                self._enqueue(t.id, out)

    def _attempt_ended(self, ev: AttemptEnded, now: float, out: list[Action]) -> None:
        st = self.tasks[ev.task_id]
        agent = self._release_slot(ev.task_id)
        if self.spending.charge(ev.task_id, ev.cost_usd) and not self._stopped:
            self._stopped = "budget_exhausted"  # reaching the run's budget stops new work
        if ev.outcome is not Outcome.RATE_LIMITED:
            self._limit_streak.pop(agent, None)
        if ev.task_id in self._cancelling:  # whatever it did before the stop reached it
            self._cancelling.discard(ev.task_id)
            self._held.discard(ev.task_id)
            self._finish(ev.task_id, S.CANCELLED, out, reason=CANCELLED_BY_USER)
            return
        if ev.outcome is Outcome.SUCCESS:
            self._set(ev.task_id, S.MERGING, out)
            self._merge_queue.append(ev.task_id)
            self._keep_slot_for_next(ev.task_id)
            return
        self._held.discard(ev.task_id)
        if ev.outcome is Outcome.RATE_LIMITED:
            self._pause_agent(agent, ev.resume_at, now, out)
            self._enqueue(ev.task_id, out, reason=f"{agent} rate limited")
            return
        if ev.outcome is Outcome.INTERRUPTED:  # restarted cleanly later; uses up no retry
            self._enqueue(ev.task_id, out, reason="interrupted")
            return
        if ev.outcome is Outcome.LOST:  # its machine went away: again elsewhere, but a task that kills machines ends
            st.lost += 1
            if st.lost > MAX_LOST:
                self._finish(ev.task_id, S.FAILED, out, reason=f"crashed: its machine was lost {st.lost} times")
            else:
                self._enqueue(ev.task_id, out, reason=f"its machine was lost ({st.lost} of {MAX_LOST + 1})")
            return
        if ev.setup_failed:  # the environment's fault, not the agent's: once more, then the task fails
            st.setup_failures += 1
            if st.setup_failures == 1:
                self._retry(ev, now, out, reason="setup failed: trying once more (no retry used)")
            else:
                self._finish(ev.task_id, S.FAILED, out, reason="setup_failed: twice in a row")
            return
        st.failures += 1
        task = self.plan.task(ev.task_id)
        if self.spending.over_task_budget(ev.task_id):
            self._finish(ev.task_id, S.FAILED, out, reason=f"{ev.outcome.value}; task budget exhausted")
        elif st.failures > task.retries:
            self._finish(ev.task_id, S.FAILED, out, reason=ev.outcome.value)
        elif not retried(task, ev.outcome):
            self._finish(ev.task_id, S.FAILED, out, reason=f"{ev.outcome.value} ({failure_class(ev.outcome)}: "
                                                            "not retried unless the task's retry_on names it)")
        else:
            self._retry(ev, now, out, reason=f"retry after {ev.outcome.value}")

    def _keep_slot_for_next(self, task_id: str) -> None:
        """Keep the slot a result frees for the dependent its merge makes ready, while that merge (starting now)
        runs, when that dependent outranks every queued task: handed to a lesser task, the slot would make the
        critical path wait for it, at every link of a chain (B1)."""
        if self.plan.gate or self._merging or len(self._merge_queue) > 1 or not self._queue:
            return  # a merge that waits for others, or a gate's check, can take minutes: the slot is not kept
        best = self._queue[0][0]
        for d in self._dependents[task_id]:
            if self._key[d] < best and self.tasks[d].status is S.PENDING and all(
                    self.tasks[x].status is S.MERGED for x in self.plan.task(d).depends_on if x != task_id):
                self._kept_for = task_id
                return

    def _retry(self, ev: AttemptEnded, now: float, out: list[Action], *, reason: str) -> None:
        """Queue the task again; after a transient failure, paused for its backoff first."""
        streak = self._streaks.get(ev.task_id, 0) + 1
        delay = backoff_s(self.plan.task(ev.task_id), ev.outcome, streak)
        if delay > 0:
            self._streaks[ev.task_id] = streak
            self._waits[ev.task_id] = now + delay
            reason = f"{reason}: backing off {delay:.1f}s"
        else:
            self._streaks.pop(ev.task_id, None)
        self._enqueue(ev.task_id, out, reason=reason)

    def _pause_agent(self, agent: str, resume_at: float | None, now: float, out: list[Action]) -> None:
        """Pause an agent until its reset time, else with exponential backoff (doubling from the agent's
        `rate_limit_backoff`, default 1 min, up to 30 min)."""
        streak = self._limit_streak.get(agent, 0)
        self._limit_streak[agent] = streak + 1
        spec = self.plan.agents.get(agent)
        base = float(spec.option("rate_limit_backoff", BACKOFF_BASE_S)) if spec else BACKOFF_BASE_S
        until = resume_at if resume_at is not None else now + min(BACKOFF_CAP_S, base * 2**streak)
        self._agent_paused[agent] = max(until, self._agent_paused.get(agent, until))
        self._refresh_pauses(out, reason=f"{agent} rate limited")

    def _merge_ended(self, ev: MergeEnded, out: list[Action]) -> None:
        self._merging.discard(ev.task_id)
        self._held.discard(ev.task_id)
        if ev.merged:
            self._finish(ev.task_id, S.MERGED, out)
            return
        if ev.interrupted:  # no verdict on the result: it waits, merging, for the next session; no retry used
            return
        if ev.error:  # git failed, not the agent: running it again would not help, and is no conflict
            self._finish(ev.task_id, S.FAILED, out, reason=ev.error)
            return
        st = self.tasks[ev.task_id]
        st.failures += 1
        reason = "conflict on " + ", ".join(ev.conflicts) if ev.conflicts else "conflict"
        reason = INTEGRATION_FAILED if ev.gate_failed else reason
        if st.failures <= self.plan.task(ev.task_id).retries:
            self._enqueue(ev.task_id, out, reason=f"retry after {reason}")
        else:
            self._finish(ev.task_id, S.FAILED if ev.gate_failed else S.CONFLICT, out, reason=reason)

    # ---- transitions ------------------------------------------------------------------------------------------
    def _set(self, task_id: str, status: TaskStatus, out: list[Action], reason: str = "") -> None:
        st = self.tasks[task_id]
        if st.status is not status:
            self._move(st, status)
            until = self._paused_until(task_id) if status is S.PAUSED else None
            out.append(StatusChanged(task_id, status, reason, until))

    def _move(self, st: TaskState, status: TaskStatus) -> None:
        self.counts[st.status] -= 1
        self.counts[status] += 1
        st.status = status

    def _enqueue(self, task_id: str, out: list[Action], reason: str = "") -> None:
        if self._stopped == "cancelled":
            self._finish(task_id, S.CANCELLED, out, reason="cancelled", propagate=False)
            return
        self._set(task_id, S.PAUSED if self._must_wait(task_id) else S.QUEUED, out, reason)
        bisect.insort(self._queue, (self._key[task_id], task_id))

    def _dequeue(self, task_id: str) -> None:
        i = bisect.bisect_left(self._queue, (self._key[task_id], task_id))
        if i < len(self._queue) and self._queue[i][1] == task_id:
            del self._queue[i]

    def _finish(
        self, task_id: str, status: TaskStatus, out: list[Action], reason: str = "", propagate: bool = True
    ) -> None:
        self._set(task_id, status, out, reason)
        self._unfinished -= 1
        if status is S.MERGED:
            candidates = list(self._dependents[task_id])
        else:
            candidates = []
            if propagate:
                self._block_descendants(task_id, out)
        nxt = self._track_next.get(task_id)
        if nxt:
            candidates.append(nxt)
        for c in candidates:
            if self.tasks[c].status is S.PENDING and self._ready(c):
                self._enqueue(c, out)

    def _block_descendants(self, task_id: str, out: list[Action]) -> None:
        stack = list(self._dependents[task_id])
        while stack:
            d = stack.pop()
            st = self.tasks[d]
            if st.status in (S.PENDING, S.QUEUED, S.PAUSED):
                self._dequeue(d)
                self._set(d, S.BLOCKED, out, reason=f"dependency '{task_id}' did not merge")
                self._unfinished -= 1
                stack.extend(self._dependents[d])
                nxt = self._track_next.get(d)
                if nxt and self.tasks[nxt].status is S.PENDING and self._ready(nxt):
                    self._enqueue(nxt, out)

    def _ready(self, task_id: str) -> bool:
        task = self.plan.task(task_id)
        if any(self.tasks[d].status is not S.MERGED for d in task.depends_on):
            return False
        prev = self._track_prev.get(task_id)
        return prev is None or self.tasks[prev].status.terminal

    def _release_slot(self, task_id: str) -> str:
        """Free the task's slot; returns the agent its attempt used."""
        agent = self._running_agent.pop(task_id, self.plan.task(task_id).agent)
        if task_id in self._running:
            self._running.discard(task_id)
            self._agent_running[agent] -= 1
        return agent

    def _unpause(self, now: float, out: list[Action]) -> None:
        resumed = [a for a, until in self._agent_paused.items() if until <= now]
        for agent in resumed:
            del self._agent_paused[agent]
        waited = [t for t, until in self._waits.items() if until <= now]
        for task_id in waited:
            del self._waits[task_id]
        if resumed or waited:
            self._refresh_pauses(out, reason="agent resumed" if resumed else "backoff over")

    def _paused_agents(self) -> frozenset[str]:
        return frozenset(name for name, spec in self.plan.agents.items() if spec.option("paused", False))

    def _away(self, agent: str) -> bool:
        """Rate limited or paused by `orchard set`."""
        return agent in self._agent_paused or agent in self._user_paused

    def _must_wait(self, task_id: str) -> bool:
        """Paused: in its backoff, or every agent it may start on away."""
        if task_id in self._waits:
            return True
        task = self.plan.task(task_id)
        return self._away(task.agent) and all(self._away(a) for a in task.agents)

    def _paused_until(self, task_id: str) -> float | None:
        ends = [self._agent_paused[a] for a in self.plan.task(task_id).choices if a in self._agent_paused]
        return self._waits.get(task_id) or min(ends, default=None)

    def _refresh_pauses(self, out: list[Action], *, reason: str) -> None:
        """Waiting tasks paused or queued as their backoff and their agent's pauses now say."""
        for _, task_id in self._queue:
            status = self.tasks[task_id].status
            wait = self._must_wait(task_id)
            if status is S.QUEUED and wait:
                agent = self.plan.task(task_id).agent
                why = f"{agent} paused by orchard set" if agent in self._user_paused else reason
                self._set(task_id, S.PAUSED, out, reason=why)
            elif status is S.PAUSED and not wait:
                self._set(task_id, S.QUEUED, out, reason=reason)

    # ---- decisions --------------------------------------------------------------------------------------------
    def _agent_for(self, task_id: str) -> str | None:
        """The agent that can take the task now: the first of its own (`agent: [a, b]`) with a free slot, else the
        first free fallback of those that are paused."""
        if task_id in self._waits:
            return None
        choices = self.plan.task(task_id).choices
        candidates: Sequence[str] = choices  # the usual case, one agent at work: no list to build per dispatch
        if len(choices) > 1 or self._away(choices[0]):
            candidates = [a for a in choices if not self._away(a)] + [
                str(fallback) for a in choices if self._away(a) and (spec := self.plan.agents.get(a))
                for fallback in spec.option("fallback", ())]
        for agent in candidates:
            other = self.plan.agents.get(agent)
            limit = other.max_parallel if other and other.max_parallel else self.parallel
            if not self._away(agent) and self._agent_running.get(agent, 0) < limit:
                return agent
        return None

    def _files_free(self, task_id: str) -> bool:
        return not (self._conflicts.get(task_id, frozenset()) & self._held)

    def _dispatch(self, out: list[Action]) -> None:
        gate = self.plan.gate
        waiting = len(self._merge_queue) + (len(self._merging) if gate else 0)
        if self._stopped or self.hold or waiting >= self.parallel + (gate.batch if gate else 0):
            return  # backpressure: while results wait to merge, new attempts would only lengthen the queue
        kept = int(self._kept_for in self._merging or self._kept_for in self._merge_queue)
        i = 0
        while i < len(self._queue) and len(self._running) + kept < self.parallel:
            task_id = self._queue[i][1]
            agent = self._agent_for(task_id)
            if agent is None or not self._files_free(task_id):
                i += 1
                continue
            del self._queue[i]
            self._start(task_id, agent, out)

    def _start(self, task_id: str, agent: str, out: list[Action]) -> None:
        st = self.tasks[task_id]
        if self.spending.over_task_budget(task_id):
            self._finish(task_id, S.FAILED, out, reason="task budget exhausted")
            return
        st.attempts += 1
        self._running_agent[task_id] = agent
        self._running.add(task_id)
        self._held.add(task_id)
        self._agent_running[agent] = self._agent_running.get(agent, 0) + 1
        self._set(task_id, S.RUNNING, out)
        out.append(StartAttempt(task_id, st.attempts, agent, self.spending.left(task_id)))

    def _maybe_merge(self, out: list[Action]) -> None:
        while self._merge_queue and (self.plan.gate or not self._merging):
            task_id = self._merge_queue.popleft()
            self._merging.add(task_id)
            out.append(StartMerge(task_id))

    def _check_done(self, out: list[Action]) -> None:
        if self._done or not self._kicked or self._running or self._merging or self._merge_queue:
            return
        cancelled = self._stopped == "cancelled" and any(t.status is S.CANCELLED for t in self.tasks.values())
        if self._unfinished == 0 and not cancelled:
            self._done = True
            out.append(RunDone(complete=True, reason=self._stopped or ""))
        elif self._stopped:
            self._done = True
            out.append(RunDone(complete=False, reason=self._stopped))
        elif not self._queue and not self._agent_paused:
            # Nothing queued, nothing running, tasks unfinished: only possible with an inconsistent restore.
            self._done = True
            out.append(RunDone(complete=False, reason="stuck"))
