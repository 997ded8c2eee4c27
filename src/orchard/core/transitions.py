"""The run journal's transitions: what each state change writes, in one transaction with its event.

`Journal` implements `core.journal.RunJournal` over any `Records` store, so the SQLite journal of real runs and the
in-memory one of `orchard.testing` cannot differ in what a transition means, only in where the records live. Secrets
are redacted here, once, from every text a record or event receives; observers hear of an event only after the
transaction that wrote it committed, and one that raises is dropped, never the run.

A journal keeps the run's task records, and the attempts it is running, in memory as it writes them (it is their
only writer while its session lives), so a transition reads nothing back from the store but the run record, which
`orchard cancel` writes from another process. A failed transaction drops that copy; the next read reloads it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from orchard.core.context import capped_summary
from orchard.core.control_transitions import ControlTransitions
from orchard.core.events import (
    AgentActivity,
    AgentOutput,
    AttemptFinished,
    AttemptStarted,
    MergeFinished,
    OrchardEvent,
    PreflightChecked,
    QueueChanged,
    RunFinished,
    RunHeld,
    RunNote,
    RunStarted,
    SetupFinished,
    SetupStarted,
    TaskStatusChanged,
    TeardownFinished,
    VerifyFinished,
    bounded_line,
    iso,
    redacted,
)
from orchard.core.gate_transitions import GateTransitions
from orchard.core.journal import AgentExit, AttemptStart, Counts, Observer, Records, Verdict, VerifyRun
from orchard.core.model import MergeOutcome, Outcome, Plan, RunStatus, TaskStatus
from orchard.core.records import AttemptRecord, RunRecord, TaskRecord
from orchard.core.redact import NO_REDACTION
from orchard.core.summary import summarize

log = logging.getLogger("orchard")
S = TaskStatus
TaskUpdate = Callable[[TaskRecord, float], TaskRecord]


class Journal(GateTransitions, ControlTransitions):
    """The transitions of one run (`run_id`) over a `Records` store. Used from one thread (the engine's loop)."""

    def __init__(self, records: Records, run_id: str, *, clock: Callable[[], float],
                 redact: Callable[[str], str] = NO_REDACTION) -> None:
        self.records = records
        self.run_id = run_id
        self._clock = clock
        self._redact = redact
        self._observers: list[Observer] = []
        self._pending: list[OrchardEvent] | None = None  # events of the open outermost transaction
        self._plan: Plan | None = None
        self._agent_seconds: dict[int, float] = {}  # attempt id → its agent's run time, for `attempt.finished`
        self._tasks: dict[str, TaskRecord] | None = None  # the copy described above, loaded on first use
        self._live: dict[int, AttemptRecord] = {}  # attempts started and not finished, by id

    # ---- reading ---------------------------------------------------------------------------------------------
    @property
    def plan(self) -> Plan:
        if self._plan is None:
            self._plan = self.records.plan(self.run_id)
        return self._plan

    def run(self) -> RunRecord:
        return self.records.run(self.run_id)

    def task(self, task_id: str) -> TaskRecord:
        tasks = self._task_records()
        if task_id not in tasks:
            return self.records.task(self.run_id, task_id)  # the store's own error
        return tasks[task_id]

    def tasks(self) -> list[TaskRecord]:
        return list(self._task_records().values())

    def attempts(self, task_id: str | None = None) -> list[AttemptRecord]:
        return self.records.attempts(self.run_id, task_id)

    def _task_records(self) -> dict[str, TaskRecord]:
        if self._tasks is None:
            self._tasks = {t.task_id: t for t in self.records.tasks(self.run_id)}
        return self._tasks


    def open_attempts(self) -> list[AttemptRecord]:
        """Attempts started and never finished: a live one, or one a dead session left."""
        return [a for a in self.attempts() if a.finished_at is None]

    def last_event_ts(self) -> float | None:
        """When the journal last recorded anything for this run."""
        return max((ts for _, ts in self.records.event_times(self.run_id)), default=None)

    def count_events(self, event_type: str) -> int:
        """How many events of `event_type` the run has journaled."""
        return sum(1 for kind, _ in self.records.event_times(self.run_id) if kind == event_type)

    def events(self) -> list[dict[str, Any]]:
        """Every event of the run as its JSON object, in order."""
        return [data for _, data in self.records.events(self.run_id)]

    def summary(self) -> dict[str, Any]:
        return summarize(self.records, self.run_id, self._clock())

    # ---- observers and transactions ------------------------------------------------------------------------------
    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)

    @contextmanager
    def atomic(self, *, durable: bool = False) -> Iterator[None]:
        """One transaction; nested, a savepoint. Events reach observers once the outermost one commits. The
        `durable` ones are those a power cut must not undo: a run's start (its plan) and end, and merges."""
        outer = self._pending is None
        pending: list[OrchardEvent] = [] if self._pending is None else self._pending
        mark = len(pending)
        self._pending = pending
        try:
            with self.records.transaction(durable=durable):
                yield
        except BaseException:
            del pending[mark:]  # what the failed part journaled never happened
            self._tasks, self._live = None, {}  # nor did what it wrote: read the records again
            if outer:
                self._pending = None
            raise
        if outer:
            self._pending = None
            self._publish(pending)

    def _publish(self, events: list[OrchardEvent]) -> None:
        for event in events:
            for observer in list(self._observers):
                try:
                    observer(event)
                except Exception:
                    log.exception("event observer %r failed and was disabled", observer)
                    self._observers.remove(observer)

    def _emit(self, event: OrchardEvent) -> None:
        """Journal an event inside the open transaction (redacted), to be published when it commits."""
        assert self._pending is not None, "events are journaled inside a transition"
        event = redacted(event, self._redact)
        task_id = event.task_id
        agent = self.plan.task(task_id).agent if task_id and task_id in self.plan else None
        self.records.add_event(event, agent)
        self._pending.append(event)

    # ---- the run -------------------------------------------------------------------------------------------------
    def run_started(self, *, plan: Plan, base: str, base_commit: str, integration_branch: str, parallel: int,
                    pid: int, environment: dict[str, str] | None = None) -> None:
        """A new run: its record (with the variables setup and verify are to run with), every task pending,
        orchard's record of the integration tip at the base."""
        with self.atomic(durable=True):
            now = self._clock()
            run = RunRecord(id=self.run_id, status=RunStatus.RUNNING, base=base, base_commit=base_commit,
                            integration_branch=integration_branch, plan_source=plan.source, parallel=parallel,
                            started_at=now, pid=pid, integration_tip=base_commit,
                            environment=json.dumps(environment, sort_keys=True) if environment else "")
            track_of = {tid: name for name, members in plan.tracks.items() for tid in members}
            tasks = [TaskRecord(run_id=self.run_id, task_id=t.id, position=i, status=S.PENDING, agent=t.agent,
                                track=track_of.get(t.id, t.track)) for i, t in enumerate(plan.tasks)]
            self.records.add_run(run, plan, tasks)
            self._plan, self._tasks = plan, {t.task_id: t for t in tasks}
            self._emit(RunStarted(run_id=self.run_id, ts=now, base=base, base_commit=base_commit,
                                  integration_branch=integration_branch, tasks=len(plan.tasks), parallel=parallel,
                                  statuses={t.task_id: t.status for t in tasks}))

    def run_resumed(self, *, pid: int, integration_tip: str) -> None:
        """A new session of an existing run, from the integration tip recovery decided to trust."""
        with self.atomic():
            now, run = self._clock(), self.run()
            self.records.save_run(replace(run, status=RunStatus.RUNNING, pid=pid, finished_at=None,
                                          cancel_requested=False, integration_tip=integration_tip, held=""))
            self._emit(RunStarted(run_id=self.run_id, ts=now, base=run.base, base_commit=run.base_commit,
                                  integration_branch=run.integration_branch, tasks=len(self.plan.tasks),
                                  parallel=run.parallel, resumed=True,
                                  statuses={t.task_id: t.status for t in self.tasks()},
                                  cost_usd=round(sum((a.cost_usd for a in self.attempts()), 0.0), 6)))

    def noted(self, text: str, *, level: str = "info", attention: bool = False) -> None:
        """A run-level notice: a warning, a restored ref, a landing; `attention`: one the user must act on."""
        with self.atomic():
            self._emit(RunNote(run_id=self.run_id, ts=self._clock(), level=level, text=text, attention=attention))

    def cancel_requested(self) -> None:
        """`orchard cancel` asked the live session to cancel (it is signalled next)."""
        with self.atomic():
            self.records.save_run(replace(self.run(), cancel_requested=True))
            self._emit(RunNote(run_id=self.run_id, ts=self._clock(), level="warning",
                               text="cancel requested by `orchard cancel`"))

    def run_held(self, reason: str) -> None:
        """New attempts wait for the machine (a limit of `limits` is exceeded), or ("") go on again."""
        with self.atomic():
            self.records.save_run(replace(self.run(), held=reason))
            self._emit(RunHeld(run_id=self.run_id, ts=self._clock(), reason=reason))

    def queue_changed(self, *, waiting: int, running: int, free: int, paused: int, held: str,
                      eta: float | None = None) -> None:
        """Telemetry of the queue (no record: the counts are the tasks' statuses), with when the run should end."""
        with self.atomic():
            self._emit(QueueChanged(run_id=self.run_id, ts=self._clock(), waiting=waiting, running=running,
                                    free=free, paused=paused, held=held, eta=iso(eta)))

    def preflight_checked(self, command: str, *, outcome: str, duration_s: float, detail: str = "") -> None:
        """A verify command ran on the untouched base before any agent; one that failed there is remembered, so the
        tasks' failures of it say so."""
        with self.atomic():
            if outcome == "red":
                run = self.run()
                red = json.loads(run.baseline_red) if run.baseline_red else []
                self.records.save_run(replace(run, baseline_red=json.dumps(sorted({*red, command}))))
            self._emit(PreflightChecked(run_id=self.run_id, ts=self._clock(), command=command, outcome=outcome,
                                        duration_s=duration_s, detail=self._redact(detail)))

    def run_finished(self, status: RunStatus, *, reason: str) -> dict[str, Any]:
        """The session ended the run so; returns the summary figures it journaled."""
        with self.atomic(durable=True):
            now = self._clock()
            self.records.save_run(replace(self.run(), status=status, finished_at=now, reason=self._redact(reason),
                                          held=""))
            summary = summarize(self.records, self.run_id, now)
            self._emit(RunFinished(run_id=self.run_id, ts=now, status=status, summary=summary))
        return summary

    # ---- tasks ---------------------------------------------------------------------------------------------------
    def _task(self, task_id: str, status: TaskStatus, counts: Counts | None, *, reason: str = "",
              until: float | None = None, update: TaskUpdate | None = None) -> None:
        """Move a task to `status` (its finish time set when final) and journal `task.status`."""
        with self.atomic():
            now, task = self._clock(), self.task(task_id)
            task = replace(task, status=status, finished_at=now if status.terminal else task.finished_at)
            if counts is not None:
                task = replace(task, attempts=counts.attempts, failures=counts.failures)
            if update is not None:
                task = update(task, now)
            self._save_task(task)
            shown = f"{reason} until {iso(until)}" if until is not None else reason
            self._emit(TaskStatusChanged(run_id=self.run_id, ts=now, task=task_id, status=status,
                                         attempt=task.attempts, reason=shown, until=iso(until)))

    def _ended(self, task_id: str, status: TaskStatus, counts: Counts | None, reason: str) -> None:
        """A final status whose reason is the task's error (the reason a failed attempt gave is recorded already)."""
        text = self._redact(reason)
        self._task(task_id, status, counts, reason=reason,
                   update=(lambda t, _now: replace(t, error=text)) if reason else None)

    def task_queued(self, task_id: str, *, counts: Counts, reason: str = "") -> None:
        self._task(task_id, S.QUEUED, counts, reason=reason)

    def task_paused(self, task_id: str, *, counts: Counts, until: float | None, reason: str = "") -> None:
        """Its agent is rate limited; it waits for the reset time."""
        self._task(task_id, S.PAUSED, counts, reason=reason, until=until)

    def task_started(self, task_id: str, *, counts: Counts, branch: str) -> None:
        """An attempt starts: the task branch is recorded, and the time of the task's first start."""
        self._task(task_id, S.RUNNING, counts,
                   update=lambda t, now: replace(t, branch=branch, started_at=t.started_at or now))

    def task_verifying(self, task_id: str, *, counts: Counts) -> None:
        self._task(task_id, S.VERIFYING, counts)

    def task_merging(self, task_id: str, *, counts: Counts) -> None:
        self._task(task_id, S.MERGING, counts)

    def task_merged(self, task_id: str, *, counts: Counts) -> None:
        self._task(task_id, S.MERGED, counts)

    def task_failed(self, task_id: str, *, counts: Counts, reason: str = "") -> None:
        """Out of retries (or budget); the failed attempt recorded the error already."""
        self._task(task_id, S.FAILED, counts, reason=reason)

    def task_conflicted(self, task_id: str, *, counts: Counts, reason: str = "") -> None:
        self._ended(task_id, S.CONFLICT, counts, reason)

    def task_blocked(self, task_id: str, *, counts: Counts, reason: str = "") -> None:
        self._ended(task_id, S.BLOCKED, counts, reason)

    def task_cancelled(self, task_id: str, *, counts: Counts | None = None, reason: str = "cancelled") -> None:
        self._ended(task_id, S.CANCELLED, counts, reason)

    def task_reset(self, task_id: str) -> None:
        """`orchard retry`: the task starts afresh, with its retries back and its error forgotten."""
        self._task(task_id, S.PENDING, None, reason="retry requested",
                   update=lambda t, _now: replace(t, failures=0, error="", finished_at=None))

    # ---- attempts ------------------------------------------------------------------------------------------------
    def _attempt(self, attempt_id: int) -> AttemptRecord:
        live = self._live.get(attempt_id)
        return live if live is not None else self.records.attempt(attempt_id)

    def _save_task(self, task: TaskRecord) -> None:
        self.records.save_task(task)
        self._task_records()[task.task_id] = task

    def _save_attempt(self, attempt: AttemptRecord) -> None:
        self.records.save_attempt(attempt)
        if attempt.finished_at is None:
            self._live[attempt.id] = attempt
        else:  # a finished attempt is read again rarely (a retry, the merge): from the store, memory stays bounded
            self._live.pop(attempt.id, None)

    def _add_attempt(self, attempt: AttemptRecord) -> int:
        attempt_id = self.records.add_attempt(attempt)
        self._live[attempt_id] = replace(attempt, id=attempt_id)
        return attempt_id

    def attempt_started(self, start: AttemptStart) -> int:
        """An attempt's agent is about to start in its prepared worktree; returns the attempt's id."""
        with self.atomic():
            now = self._clock()
            attempt_id = self._add_attempt(AttemptRecord(
                id=0, run_id=self.run_id, task_id=start.task_id, number=start.number, agent=start.agent,
                started_at=now, worktree=start.worktree, start_commit=start.start_commit, log_path=start.log_path,
                slot=start.slot, port=start.port, host=start.host, token=start.token))
            self._emit(AttemptStarted(run_id=self.run_id, ts=now, task=start.task_id, attempt=start.number,
                                      agent=start.agent, branch=start.branch, worktree=start.worktree,
                                      start_commit=start.start_commit, host=start.host))
        return attempt_id

    def agent_spawned(self, attempt_id: int, pid: int) -> None:
        """The agent's process (leader of its own group) is running: recorded so a crash can still reap it."""
        with self.atomic():
            self._save_attempt(replace(self._attempt(attempt_id), pid=pid, pgid=pid))

    def agent_exited(self, attempt_id: int, exited: AgentExit) -> None:
        """The agent's exit and what it spent, recorded at once: a crash during commit or verify keeps the cost."""
        with self.atomic():
            self._save_attempt(replace(
                self._attempt(attempt_id), exit_code=exited.exit_code, signal=exited.signal,
                tokens_in=exited.tokens_in, tokens_out=exited.tokens_out, cost_usd=exited.cost_usd,
                session_id=exited.session_id, summary=capped_summary(self._redact(exited.summary))))
        self._agent_seconds[attempt_id] = exited.duration_s

    def agent_active(self, task_id: str, number: int, text: str) -> None:
        """What the agent is doing now (throttled by the caller: the dashboard shows only the latest)."""
        with self.atomic():
            self._emit(AgentActivity(run_id=self.run_id, ts=self._clock(), task=task_id, attempt=number, text=text))

    def agent_output(self, task_id: str, number: int, stream: str, line: str) -> None:
        """A line of the agent's output, for observers that asked for it: published at once, not journaled."""
        self._publish([redacted(AgentOutput(run_id=self.run_id, ts=self._clock(), task=task_id, attempt=number,
                                            stream=stream, line=bounded_line(line)), self._redact)])

    def setup_started(self, attempt_id: int, command: str) -> None:
        """The attempt's environment setup starts (its first command is what the dashboard shows)."""
        with self.atomic():
            attempt = self._attempt(attempt_id)
            self._emit(SetupStarted(run_id=self.run_id, ts=self._clock(), task=attempt.task_id,
                                    attempt=attempt.number, command=command))

    def setup_finished(self, attempt_id: int, *, passed: bool, skipped: bool, duration_s: float,
                       detail: str = "") -> None:
        """Setup ended (or was skipped as current); its time is the attempt's `setup_s`."""
        with self.atomic():
            attempt = replace(self._attempt(attempt_id), setup_s=round(duration_s, 3), setup_skipped=skipped)
            self._save_attempt(attempt)
            self._emit(SetupFinished(run_id=self.run_id, ts=self._clock(), task=attempt.task_id,
                                     attempt=attempt.number, passed=passed, skipped=skipped,
                                     duration_s=duration_s, detail=detail[-2000:]))

    def teardown_finished(self, attempt_id: int, *, passed: bool, duration_s: float, detail: str = "",
                          recovered: bool = False) -> None:
        """Teardown ran (in the session, or `recovered` by a resume); a failure is a warning, never the outcome."""
        with self.atomic():
            attempt = replace(self._attempt(attempt_id), teardown_s=round(duration_s, 3))
            self._save_attempt(attempt)
            now = self._clock()
            self._emit(TeardownFinished(run_id=self.run_id, ts=now, task=attempt.task_id, attempt=attempt.number,
                                        passed=passed, duration_s=duration_s, detail=detail[-2000:],
                                        recovered=recovered))
            if not passed:
                self._emit(RunNote(run_id=self.run_id, ts=now, level="warning",
                                   text=f"{attempt.task_id} attempt {attempt.number}: {detail}"))

    def verify_finished(self, attempt_id: int, run: VerifyRun) -> None:
        """The verify command ended; a failure's feedback goes to the next attempt's prompt."""
        with self.atomic():
            attempt = self._attempt(attempt_id)
            if run.feedback is not None:
                feedback = self._redact(run.feedback)
                self._save_task(replace(self.task(attempt.task_id), feedback=feedback))
            self._emit(VerifyFinished(run_id=self.run_id, ts=self._clock(), task=attempt.task_id,
                                      attempt=attempt.number, passed=run.passed, exit_code=run.exit_code,
                                      duration_s=run.duration_s, tail=run.tail[-2000:]))

    def attempt_finished(self, attempt_id: int, verdict: Verdict) -> None:
        """The attempt's outcome, its result commit, the task's error and feedback for a retry, in one step."""
        with self.atomic():
            now, attempt = self._clock(), self._attempt(attempt_id)
            detail = self._redact(verdict.detail)
            attempt = replace(attempt, finished_at=now, outcome=verdict.outcome, detail=detail,
                              end_commit=verdict.end_commit or attempt.end_commit)
            self._save_attempt(attempt)
            task = self.task(attempt.task_id)
            if verdict.feedback is not None:
                task = replace(task, feedback=self._redact(verdict.feedback))
            if verdict.outcome is not Outcome.SUCCESS:
                task = replace(task, error=f"{verdict.outcome.value}: {detail}".strip(": "))
            self._save_task(task)
            self._emit(self._finished_event(attempt, now, self._agent_seconds.pop(attempt_id, 0.0)))

    def _finished_event(self, attempt: AttemptRecord, now: float, seconds: float = 0.0) -> AttemptFinished:
        return AttemptFinished(run_id=self.run_id, ts=now, task=attempt.task_id, attempt=attempt.number,
                               outcome=attempt.outcome or Outcome.INTERRUPTED, exit_code=attempt.exit_code,
                               signal=attempt.signal, duration_s=seconds, tokens_in=attempt.tokens_in,
                               tokens_out=attempt.tokens_out, cost_usd=attempt.cost_usd, detail=attempt.detail)

    def attempt_not_started(self, task_id: str, number: int, outcome: Outcome, detail: str) -> None:
        """Attempt `number` ended before its agent started (no worktree: `setup_failed`, or `interrupted` by a hard
        stop): nothing ran, so there is no attempt record."""
        with self.atomic():
            text = self._redact(detail)
            self._save_task(replace(self.task(task_id), error=f"{outcome.value}: {text}"))
            self._emit(AttemptFinished(run_id=self.run_id, ts=self._clock(), task=task_id, attempt=number,
                                       outcome=outcome, detail=text))

    def attempt_abandoned(self, attempt_id: int, *, detail: str, finished_at: float) -> None:
        """Recovery closes an attempt a dead session left open, as interrupted, at the last moment it was seen."""
        with self.atomic():
            attempt = replace(self._attempt(attempt_id), finished_at=finished_at, outcome=Outcome.INTERRUPTED,
                              detail=self._redact(detail))
            self._save_attempt(attempt)
            self._emit(self._finished_event(attempt, self._clock()))

    def internal_error(self, task_id: str, text: str) -> None:
        """A bug in orchard ended the task's attempt or merge: the task's error says so, its open attempt closes."""
        with self.atomic():
            now, detail = self._clock(), self._redact(f"internal error: {text}")
            task = self.task(task_id)
            open_attempts = [a for a in self.attempts(task_id) if a.finished_at is None]
            for attempt in open_attempts:
                self._save_attempt(replace(attempt, finished_at=now, outcome=Outcome.SETUP_FAILED,
                                                  detail=detail))
            self._save_task(replace(task, error=detail))
            number = open_attempts[-1].number if open_attempts else task.attempts
            self._emit(AttemptFinished(run_id=self.run_id, ts=now, task=task_id, attempt=number,
                                       outcome=Outcome.SETUP_FAILED, detail=detail))

    # ---- the merge queue -----------------------------------------------------------------------------------------
    def merge_finished(self, task_id: str, outcome: MergeOutcome, *, commit: str | None = None,
                       conflicts: tuple[str, ...] = (), feedback: str = "", tip: str | None = None,
                       error: str = "") -> None:
        """The merge queue's verdict on a task: merged (with the new integration tip), a conflict (with the paths
        as feedback for a retry), or a git failure (`error`, which becomes the task's)."""
        with self.atomic(durable=True):
            task = self.task(task_id)
            if outcome is MergeOutcome.ERROR:
                task = replace(task, error=self._redact(error))
            elif outcome is MergeOutcome.CONFLICT:
                task = replace(task, conflicts=self._redact(", ".join(conflicts)), feedback=self._redact(feedback))
            elif outcome in (MergeOutcome.MERGED, MergeOutcome.ALREADY):
                task = replace(task, merged_commit=commit, conflicts="", error="")
                if tip is not None:
                    self.records.save_run(replace(self.run(), integration_tip=tip))
            self._save_task(task)
            self._emit(MergeFinished(run_id=self.run_id, ts=self._clock(), task=task_id, result=outcome,
                                     commit=commit, conflicts=conflicts))

    def merge_recovered(self, task_id: str, *, commit: str, tip: str) -> None:
        """Recovery found the merge a dead session made (`commit`, on the trusted tip `tip`): the task is merged."""
        with self.atomic(durable=True):
            now, task = self._clock(), self.task(task_id)
            if task.merged_commit != commit:  # the session died before journaling the merge itself
                self._emit(MergeFinished(run_id=self.run_id, ts=now, task=task_id, result=MergeOutcome.MERGED,
                                         commit=commit))
            self.records.save_run(replace(self.run(), integration_tip=tip))
            self._save_task(replace(task, status=S.MERGED, merged_commit=commit, conflicts="", error="",
                                           finished_at=now))
            self._emit(TaskStatusChanged(run_id=self.run_id, ts=now, task=task_id, status=S.MERGED,
                                         attempt=task.attempts, reason="merged before the last session stopped"))
