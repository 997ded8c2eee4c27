"""The scheduler's live-control events (`orchard cancel TASK`, `set`, `agents add`, `add`): a mixin of
`core.scheduler.Scheduler`, pure like it, kept apart so that the scheduling rules stay readable in one file."""

from __future__ import annotations

from collections import Counter, deque
from typing import TYPE_CHECKING

from orchard.core.model import Plan, TaskStatus
from orchard.core.scheduler_io import Action, Applied, CancelTasks, Replanned, StopAttempt, TaskState

if TYPE_CHECKING:
    from orchard.core.spending import Spending

S = TaskStatus
CANCELLED_BY_USER = "cancelled by orchard cancel"


class LiveControl:
    """`_cancel_tasks`, `_replanned` and `_cancel_waiting`; what they use of the scheduler is declared here for the
    type checker."""

    if TYPE_CHECKING:
        plan: Plan
        parallel: int
        tasks: dict[str, TaskState]
        counts: Counter[TaskStatus]
        spending: Spending
        _queue: list[tuple[tuple[float, float, int], str]]
        _merge_queue: deque[str]
        _held: set[str]
        _waits: dict[str, float]
        _cancelling: set[str]
        _user_paused: frozenset[str]
        _stopped: str | None
        _kicked: bool
        _unfinished: int
        _key: dict[str, tuple[float, float, int]]

        def _index_graph(self) -> None: ...
        def _paused_agents(self) -> frozenset[str]: ...
        def _refresh_pauses(self, out: list[Action], *, reason: str) -> None: ...
        def _promote_pending(self, out: list[Action]) -> None: ...
        def _dequeue(self, task_id: str) -> None: ...
        def _finish(self, task_id: str, status: TaskStatus, out: list[Action], reason: str = "",
                    propagate: bool = True) -> None: ...

    def _cancel_tasks(self, ev: CancelTasks, out: list[Action]) -> None:
        """Cancel the named tasks: waiting ones now, running ones once their attempt has stopped; their dependents
        are blocked and the rest of the run goes on."""
        said: list[str] = []
        for task_id in ev.task_ids:
            st = self.tasks.get(task_id)
            if st is None:
                said.append(f"{task_id}: no such task")
            elif st.status.waiting or (st.status is S.MERGING and task_id in self._merge_queue):
                self._dequeue(task_id)
                self._waits.pop(task_id, None)
                if task_id in self._merge_queue:
                    self._merge_queue.remove(task_id)
                    self._held.discard(task_id)
                self._finish(task_id, S.CANCELLED, out, reason=CANCELLED_BY_USER)
                said.append(f"{task_id}: cancelled")
            elif st.status in (S.RUNNING, S.VERIFYING):
                self._cancelling.add(task_id)
                out.append(StopAttempt(task_id))
                said.append(f"{task_id}: stopping its attempt")
            else:
                said.append(f"{task_id}: already {'merging' if st.status is S.MERGING else st.status}, left as is")
        out.append(Applied(ev.request, "; ".join(said)))

    def _replanned(self, ev: Replanned, out: list[Action]) -> None:
        """New limits or agents apply to the next starts (nothing running is stopped); tasks added to the plan
        (`orchard add`) are scheduled like the others, and the critical path is measured again with them."""
        added = [t.id for t in ev.plan.tasks if t.id not in self.tasks]
        self.plan, self.parallel = ev.plan, max(1, ev.parallel)
        self.spending.plan = ev.plan
        self._user_paused = self._paused_agents()
        if self._stopped == "budget_exhausted" and not self.spending.exhausted():
            self._stopped = None  # a raised budget lets the run go on
        if added:
            self._index_graph()
            self._queue = sorted((self._key[task_id], task_id) for _, task_id in self._queue)
            for task_id in added:
                self.tasks[task_id] = TaskState()
            self.counts[S.PENDING] += len(added)
            self._unfinished += len(added)
        self._refresh_pauses(out, reason="limits changed")
        out.append(Applied(ev.request, "; ".join(ev.changes)))  # recorded (the new tasks too) before they move
        if added and self._kicked:
            self._promote_pending(out)

    def _cancel_waiting(self, out: list[Action]) -> None:
        for task_id, st in self.tasks.items():
            if st.status in (S.PENDING, S.QUEUED, S.PAUSED):
                self._dequeue(task_id)
                self._finish(task_id, S.CANCELLED, out, reason="cancelled", propagate=False)
