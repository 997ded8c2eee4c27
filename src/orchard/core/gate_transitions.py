"""The run journal's transitions for the merge gate (`runtime.gate`): a candidate's check begins and ends; and
the guardrails' warnings on a result (`runtime.guardrails`).

A mixin of `core.transitions.Journal`: the same transactions, redaction and events as every other transition."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING

from orchard.core.events import CheckFinished, CheckStarted, MergeFinished, OrchardEvent, TaskWarning
from orchard.core.feedback import INTEGRATION_FAILED
from orchard.core.model import MergeOutcome

if TYPE_CHECKING:
    from orchard.core.journal import Records
    from orchard.core.records import RunRecord, TaskRecord


class GateTransitions:
    """`check_started`, `check_finished` and `task_warned`; what they use of the journal is declared here for the
    type checker."""

    if TYPE_CHECKING:
        run_id: str
        records: Records
        _clock: Callable[[], float]
        _redact: Callable[[str], str]

        def atomic(self, *, durable: bool = False) -> AbstractContextManager[None]: ...
        def run(self) -> RunRecord: ...
        def task(self, task_id: str) -> TaskRecord: ...
        def _emit(self, event: OrchardEvent) -> None: ...
        def _save_task(self, task: TaskRecord) -> None: ...

    def check_started(self, check: int, *, tasks: tuple[str, ...], candidate: str, tip: str) -> None:
        """A candidate was built; journaled before its check runs, so a resume checks the same results again and
        recovery knows the commit (only a checked candidate may become the integration tip)."""
        with self.atomic(durable=True):
            self._emit(CheckStarted(run_id=self.run_id, ts=self._clock(), check=check, tasks=tasks,
                                    candidate=candidate, tip=tip))

    def check_finished(self, check: int, *, tasks: tuple[str, ...], passed: bool, duration_s: float,
                       merged: Mapping[str, str], failed: tuple[str, ...], inferred: bool = False,
                       tip: str | None = None, tail: str = "", blamed_for: str = "", feedback: str = "") -> None:
        """A check's verdict, in one durable transaction with what it decided: the `merged` results (task → its
        merge commit) are on the integration branch, now at `tip`; the `failed` ones carry `blamed_for` (the
        output tail of the check that failed: this one's `tail`, or an earlier one's when inferred) as their error
        and `feedback` for their next attempt."""
        with self.atomic(durable=True):
            now = self._clock()
            for task_id, commit in merged.items():
                self._save_task(replace(self.task(task_id), merged_commit=commit, conflicts="", error=""))
                self._emit(MergeFinished(run_id=self.run_id, ts=now, task=task_id, result=MergeOutcome.MERGED,
                                         commit=commit))
            if merged and tip is not None:
                self.records.save_run(replace(self.run(), integration_tip=tip))
            why = (blamed_for or tail).strip()
            error = self._redact(f"{INTEGRATION_FAILED}: {why}" if why else INTEGRATION_FAILED)
            for task_id in failed:
                self._save_task(replace(self.task(task_id), error=error, feedback=self._redact(feedback)))
            self._emit(CheckFinished(run_id=self.run_id, ts=now, check=check, tasks=tasks, passed=passed,
                                     duration_s=duration_s, merged=tuple(merged), failed=failed, inferred=inferred,
                                     tail=tail))

    def task_warned(self, task_id: str, text: str, *, others: tuple[str, ...] = ()) -> None:
        """A warning about the task's result that did not stop it (shown on the dashboard, in `status --json`'s
        `warnings` and in the summary)."""
        with self.atomic():
            self._emit(TaskWarning(run_id=self.run_id, ts=self._clock(), task=task_id, text=text, others=others))
