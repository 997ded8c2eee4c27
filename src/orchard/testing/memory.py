"""An in-memory `Records` store, so a run's journal can live in dictionaries instead of SQLite (as httpx ships
`MockTransport`): `orchard.run(plan, repo=..., records=MemoryStore())`.

It keeps the same records the SQLite store keeps and honours transactions (a failed one, or a failed savepoint,
leaves nothing behind), so the engine runs on it unchanged. `fail_on` lets a test make one kind of write fail, the
way a full disk or a locked database would.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from orchard.core.events import OrchardEvent
from orchard.core.model import Plan
from orchard.core.records import AttemptRecord, ControlRequest, RunRecord, TaskRecord
from orchard.errors import NotRecorded

Undo = Callable[[], None]


@dataclass
class _State:
    """Everything the store holds."""

    runs: dict[str, RunRecord] = field(default_factory=dict)
    plans: dict[str, Plan] = field(default_factory=dict)
    tasks: dict[tuple[str, str], TaskRecord] = field(default_factory=dict)
    attempts: dict[int, AttemptRecord] = field(default_factory=dict)
    events: list[tuple[int, str, float, str, dict[str, Any]]] = field(default_factory=list)  # id, run, ts, type, data
    requests: dict[int, ControlRequest] = field(default_factory=dict)


class InjectedFault(Exception):
    """The write a test asked `MemoryStore` to fail."""


class MemoryStore:
    """`core.journal.Records` in memory. One process, any number of runs; not thread-safe (neither is a journal)."""

    def __init__(self) -> None:
        self._state = _State()
        self._undo: list[list[Undo]] = []  # per open transaction / savepoint: how to take its writes back
        self._faults: dict[str, int] = {}

    def fail_on(self, write: str, times: int = 1) -> None:
        """Make the next `times` calls of the write method `write` (e.g. "add_event", "save_task") raise
        InjectedFault inside their transaction."""
        self._faults[write] = times

    def _write(self, name: str) -> None:
        assert self._undo, "records are written inside a transaction"
        if self._faults.get(name, 0) > 0:
            self._faults[name] -= 1
            raise InjectedFault(f"{name} failed (injected)")

    def _put(self, table: MutableMapping[Any, Any], key: Any, value: Any) -> None:
        """Set `table[key]`, remembering how to undo it."""
        missing = key not in table
        old = table.get(key)

        def undo() -> None:
            if missing:
                del table[key]
            else:
                table[key] = old

        self._undo[-1].append(undo)
        table[key] = value

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[None]:  # memory is never durable
        self._undo.append([])
        try:
            yield
        except BaseException:
            for undo in reversed(self._undo.pop()):
                undo()
            raise
        done = self._undo.pop()
        if self._undo:  # a savepoint: its writes are the enclosing transaction's to undo now
            self._undo[-1].extend(done)

    # ---- writes ------------------------------------------------------------------------------------------------
    def add_run(self, run: RunRecord, plan: Plan, tasks: Sequence[TaskRecord]) -> None:
        self._write("add_run")
        self._put(self._state.runs, run.id, run)
        self._put(self._state.plans, run.id, plan)
        for task in tasks:
            self._put(self._state.tasks, (task.run_id, task.task_id), task)

    def add_tasks(self, tasks: Sequence[TaskRecord]) -> None:
        self._write("add_tasks")
        for task in tasks:
            self._put(self._state.tasks, (task.run_id, task.task_id), task)

    def save_run(self, run: RunRecord) -> None:
        self._write("save_run")
        self.run(run.id)
        self._put(self._state.runs, run.id, run)

    def save_task(self, task: TaskRecord) -> None:
        self._write("save_task")
        self.task(task.run_id, task.task_id)
        self._put(self._state.tasks, (task.run_id, task.task_id), task)

    def add_attempt(self, attempt: AttemptRecord) -> int:
        self._write("add_attempt")
        attempt_id = max(self._state.attempts, default=0) + 1
        self._put(self._state.attempts, attempt_id, replace(attempt, id=attempt_id))
        return attempt_id

    def save_attempt(self, attempt: AttemptRecord) -> None:
        self._write("save_attempt")
        self.attempt(attempt.id)
        self._put(self._state.attempts, attempt.id, attempt)

    def add_event(self, event: OrchardEvent, agent: str | None) -> int:
        self._write("add_event")
        event_id = (self._state.events[-1][0] if self._state.events else 0) + 1
        data = json.loads(json.dumps(event.to_dict()))  # what a reader of the SQLite journal gets back
        self._state.events.append((event_id, event.run_id, event.ts, event.type, data))
        self._undo[-1].append(self._drop_last_event)
        return event_id

    def save_plan(self, run_id: str, plan: Plan) -> None:
        self._write("save_plan")
        self.run(run_id)
        self._put(self._state.plans, run_id, plan)

    def add_request(self, request: ControlRequest) -> int:
        self._write("add_request")
        request_id = max(self._state.requests, default=0) + 1
        self._put(self._state.requests, request_id, replace(request, id=request_id))
        return request_id

    def close_request(self, request_id: int, *, result: str, applied_at: float) -> None:
        self._write("close_request")
        request = self._state.requests[request_id]
        self._put(self._state.requests, request_id, replace(request, result=result, applied_at=applied_at))

    def requests(self, run_id: str, *, open_only: bool = False) -> list[ControlRequest]:
        return [r for _, r in sorted(self._state.requests.items())
                if r.run_id == run_id and not (open_only and r.applied_at is not None)]

    def _drop_last_event(self) -> None:
        del self._state.events[-1]

    # ---- reads -------------------------------------------------------------------------------------------------
    def run(self, run_id: str | None = None) -> RunRecord:
        runs = self._state.runs
        if run_id is None:
            if not runs:
                raise NotRecorded("no runs recorded in memory")
            return max(runs.values(), key=lambda r: r.started_at)
        if run_id not in runs:
            raise NotRecorded(f"no run '{run_id}' in memory")
        return runs[run_id]

    def runs(self) -> list[RunRecord]:
        return sorted(self._state.runs.values(), key=lambda r: r.started_at)

    def plan(self, run_id: str) -> Plan:
        self.run(run_id)
        return self._state.plans[run_id]

    def tasks(self, run_id: str) -> list[TaskRecord]:
        return sorted((t for (r, _), t in self._state.tasks.items() if r == run_id), key=lambda t: t.position)

    def task(self, run_id: str, task_id: str) -> TaskRecord:
        if (run_id, task_id) not in self._state.tasks:
            raise NotRecorded(f"run {run_id} has no task '{task_id}'")
        return self._state.tasks[(run_id, task_id)]

    def attempts(self, run_id: str, task_id: str | None = None) -> list[AttemptRecord]:
        return [a for _, a in sorted(self._state.attempts.items())
                if a.run_id == run_id and (task_id is None or a.task_id == task_id)]

    def attempt(self, attempt_id: int) -> AttemptRecord:
        if attempt_id not in self._state.attempts:
            raise NotRecorded(f"no attempt {attempt_id} in memory")
        return self._state.attempts[attempt_id]

    def events(self, run_id: str, after_id: int = 0, task_id: str | None = None) -> list[tuple[int, dict[str, Any]]]:
        return [(i, data) for i, run, _, _, data in self._state.events
                if run == run_id and i > after_id and (task_id is None or data.get("task") == task_id)]

    def event_times(self, run_id: str) -> list[tuple[str, float]]:
        return [(kind, ts) for _, run, ts, kind, _ in self._state.events if run == run_id]
