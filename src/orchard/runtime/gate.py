"""The merge gate (the plan's `integration_verify`): results reach the integration branch only inside a candidate
that passed the project's check.

A result whose own verify passed joins the train (`core.train` decides). The next candidate is the green tip with
up to `integration_batch` results merged onto it in queue order, by the same merge-tree/commit-tree path as the
ungated queue and touching no checkout; a result that conflicts there leaves the candidate and goes back to its
agent. The candidate is journaled (`check.started`) and checked in a pooled check worktree set up like a task's;
only a pass moves `orchard/<run>/integration`, in one `update-ref` from the tip it was built on. A crash during a
check leaves the ref where it was and the results merging: the resume checks the same results again first.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from orchard.core.events import CheckFinished, CheckStarted
from orchard.core.feedback import conflict_feedback, integration_feedback
from orchard.core.journal import RunJournal
from orchard.core.model import Gate, MergeOutcome
from orchard.core.scheduler import Event, Kick, MergeEnded
from orchard.core.train import Train, Verdict
from orchard.errors import GitError, GitTimeout
from orchard.runtime.checkrun import CheckOutcome, CheckRun, run_check
from orchard.runtime.context import RunContext, note_repaired
from orchard.runtime.integration import guard, note_restored
from orchard.runtime.merging import MERGE_TRIES, merge_message, recorded_result, result_head
from orchard.vcs import set_ref
from orchard.vcs.merge import commit_tree, merge_trees

LINK = ".gate"  # the check worktree's hold, beside the tasks' links: no task id starts with "."
UNREADY_LIMIT = 3


@dataclass
class Candidate:
    """The green `tip` with results merged onto it in order: each kept one's merge commit (the last is `commit`),
    and the ones left out (conflicting paths, or a git failure)."""

    tip: str
    commit: str
    merges: dict[str, str] = field(default_factory=dict)
    conflicts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    moved: str | None = None  # what an agent had moved the integration ref to (put back first)
    repaired: list[str] = field(default_factory=list)

    @property
    def kept(self) -> tuple[str, ...]:
        return tuple(self.merges)

    @property
    def dropped(self) -> tuple[str, ...]:
        return (*self.conflicts, *self.errors)


class MergeGate:
    """The train of one session: fed the results the scheduler sends to merge, it runs one check at a time and
    reports each result's end (`MergeEnded`) through `post`; `merged` tidies up after a result that merged."""

    def __init__(self, ctx: RunContext, gate: Gate, *, post: Callable[[Event], None],
                 merged: Callable[[str], Awaitable[None]],
                 crashed: Callable[[tuple[str, ...], Exception], None]) -> None:
        self.ctx, self.gate, self.post, self.merged, self.crashed = ctx, gate, post, merged, crashed
        self.holding: set[str] = set()  # results in the train, not yet ended
        self._unready = 0  # checks in a row that could not even start (no worktree): after a few, give up
        self.train = Train(batch=gate.batch)
        events = ctx.journal.events()
        self.number = sum(1 for e in events if e["type"] == CheckStarted.type)
        self._first = _unfinished_check(events)  # a crash's candidate: checked again before anything else
        self._last_tail = ""  # the output of the last failed check: what an inferred culprit's feedback shows

    def add(self, task_id: str) -> None:
        self.holding.add(task_id)
        self.train.add(task_id)

    def _end(self, ended: MergeEnded) -> None:
        """Tell the scheduler a result left the gate (once: a task it no longer holds is not ended again)."""
        if ended.task_id in self.holding:
            self.holding.discard(ended.task_id)
            self.post(ended)

    def pump(self) -> Coroutine[Any, Any, None] | None:
        """The next check to run, if none runs and a result waits; while the run stops, waiting results are let go
        (still merging, for the next session) and nothing new is checked."""
        if self.train.busy:
            return None
        if self.ctx.processes.stopping:
            self._let_go()
            return None
        if self._first:  # the candidate a crash cut short, as it was (the rest of its bisection is lost)
            again = tuple(t for t in self._first if t in self.train.waiting)
            for task_id in again:
                self.train.waiting.remove(task_id)
            self.train.next_half, self._first = again, ()
        check = self.train.next_check()
        return None if check is None else self._check(check.tasks)

    def _let_go(self) -> None:
        held = (*self.train.next_half, *self.train.other_half, *self.train.waiting)
        self.train = Train(batch=self.gate.batch)
        for task_id in held:
            self._end(MergeEnded(task_id, merged=False, interrupted=True))

    async def _check(self, tasks: tuple[str, ...]) -> None:
        """One check; a bug in it ends its results (the engine records it), never the run."""
        try:
            await self._checked(tasks)
        except Exception as exc:
            if self.train.busy:
                self.train.finished(False, dropped=tasks)
            left = tuple(t for t in tasks if t in self.holding)
            if isinstance(exc, GitError) and self.ctx.processes.stopping:  # a hard stop killed git: no verdict
                for task_id in left:
                    self._end(MergeEnded(task_id, merged=False, interrupted=True))
            else:
                self.holding.difference_update(left)
                self.crashed(left, exc)
            self.post(Kick())

    async def _checked(self, tasks: tuple[str, ...]) -> None:
        """Build the candidate, check it, and act on the verdict; the engine hears of every result it ended."""
        candidate = await asyncio.to_thread(_build, self.ctx, tasks)
        self._dropped(candidate)
        if not candidate.kept:
            self.train.finished(True, dropped=candidate.dropped)
            self.post(Kick())
            return
        self.number += 1
        self.ctx.journal.check_started(self.number, tasks=candidate.kept, candidate=candidate.commit,
                                       tip=candidate.tip)
        self._show(candidate.kept)
        started = time.monotonic()
        outcome = await self._run(candidate)
        await self._verdict(candidate, outcome, time.monotonic() - started)

    def _requeue(self, tasks: tuple[str, ...]) -> None:
        for task_id in tasks:
            self.train.add(task_id)
        self.post(Kick())

    def _dropped(self, candidate: Candidate) -> None:
        """Results that could not join the candidate end here: a conflict goes back to its agent, a git failure
        fails its task, as in the ungated queue."""
        if candidate.moved:
            note_restored(self.ctx, candidate.moved)
        note_repaired(self.ctx, candidate.repaired, "before building a candidate")
        for task_id, paths in candidate.conflicts.items():
            self.ctx.journal.merge_finished(task_id, MergeOutcome.CONFLICT, conflicts=paths,
                                            feedback=conflict_feedback(paths))
            self._end(MergeEnded(task_id, merged=False, conflicts=paths))
        for task_id, error in candidate.errors.items():
            self.ctx.journal.merge_finished(task_id, MergeOutcome.ERROR, error=error)
            self._end(MergeEnded(task_id, merged=False, error=error))

    def _show(self, kept: tuple[str, ...]) -> None:
        """What the dashboard says of results in a check: merging, "checking with N others"."""
        for task_id in kept:
            others = len(kept) - 1
            text = f"checking with {others} other{'s' if others != 1 else ''}" if others else "checking alone"
            self.ctx.journal.agent_active(task_id, self.ctx.journal.task(task_id).attempts, f"gate: {text}")

    async def _run(self, candidate: Candidate) -> CheckOutcome:
        log = self.ctx.layout.run_dir(self.ctx.run_id) / "logs" / f"{LINK}.{self.number}.log"
        run = CheckRun(link=LINK, branch=f"orchard/{self.ctx.run_id}/gate", commit=candidate.commit,
                       environment=self.ctx.plan.environment, task=self.ctx.plan.task(candidate.kept[0]),
                       command=self.gate.verify, timeout_s=self.gate.timeout_s, log=log)
        return await run_check(self.ctx, run)

    async def _verdict(self, candidate: Candidate, outcome: CheckOutcome, seconds: float) -> None:
        passed = outcome.result.passed
        if not passed and (self.ctx.processes.stopping or outcome.stage == "prepare"):
            self._no_verdict(candidate, outcome)
            return
        self._unready = 0
        tip = await asyncio.to_thread(_advance, self.ctx, candidate) if passed else None
        verdict = self.train.finished(passed, dropped=candidate.dropped)
        tail = outcome.result.detail if not passed else self._last_tail
        self._last_tail = tail
        merged = {task_id: candidate.merges[task_id] for task_id in verdict.merged}
        self.ctx.journal.check_finished(self.number, tasks=candidate.kept, passed=passed, duration_s=seconds,
                                        merged=merged, failed=verdict.failed, inferred=verdict.inferred, tip=tip,
                                        tail="" if passed else tail, blamed_for=tail,
                                        feedback=self._feedback(verdict, tail))
        for task_id in verdict.failed:
            self._end(MergeEnded(task_id, merged=False, gate_failed=True))
        for task_id in verdict.merged:
            self._end(MergeEnded(task_id, merged=True))
        self.post(Kick())  # a bisection goes on even when no task changed
        for task_id in verdict.merged:
            await self.merged(task_id)

    def _no_verdict(self, candidate: Candidate, outcome: CheckOutcome) -> None:
        """The check was stopped, or no worktree could be made for it: nobody is blamed. While the run stops, the
        results stay merging for the next session, which checks them again; otherwise they are checked again."""
        self.train.finished(False, dropped=candidate.kept)  # leaves no inference behind
        if self.ctx.processes.stopping:
            for task_id in candidate.kept:
                self._end(MergeEnded(task_id, merged=False, interrupted=True))
            self.post(Kick())
            return
        self._unready += 1
        if self._unready >= UNREADY_LIMIT:
            raise GitError(["worktree"], 1, f"the gate's check could not run {UNREADY_LIMIT} times in a row: "
                                            f"{outcome.result.detail}")
        self.ctx.journal.noted(f"gate: check {self.number} could not run ({outcome.result.detail}); checking "
                               "again", level="warning")
        self._requeue(candidate.kept)

    def _feedback(self, verdict: Verdict, tail: str) -> str:
        if not verdict.failed:
            return ""
        since = self._merged_since(verdict.failed[0])
        return integration_feedback(self.gate.verify, tail, merged_with=since)

    def _merged_since(self, task_id: str) -> tuple[str, ...]:
        """The tasks merged after the task's last attempt started: the work its change met on the integration tip."""
        attempts = self.ctx.journal.attempts(task_id)
        began = attempts[-1].started_at if attempts else 0.0
        return tuple(t.task_id for t in self.ctx.journal.tasks()
                     if t.merged_commit and t.task_id != task_id and (t.finished_at or 0.0) >= began)


def checked_candidates(journal: RunJournal) -> frozenset[str] | None:
    """The candidates the run's gate began checking (None: the plan has no gate); recovery trusts an integration
    ref that moved past the journal's record only at one of them."""
    if journal.plan.gate is None:
        return None
    return frozenset(str(e["candidate"]) for e in journal.events() if e["type"] == CheckStarted.type)


def _unfinished_check(events: list[dict[str, Any]]) -> tuple[str, ...]:
    """The results of the last check a dead session started and never finished, in their order."""
    finished = {e["check"] for e in events if e["type"] == CheckFinished.type}
    started = [e for e in events if e["type"] == CheckStarted.type and e["check"] not in finished]
    return tuple(started[-1]["tasks"]) if started else ()


def _build(ctx: RunContext, tasks: tuple[str, ...]) -> Candidate:
    """The candidate, in one worker thread: the recorded green tip (put back if an agent moved the ref) with each
    result merged on in order; nothing but new objects is written."""
    integration = ctx.integration
    with integration.lock:
        repaired = ctx.own.restore()  # no merge driver or attribute an agent planted counts
        moved = guard(ctx.git, integration)
        candidate = Candidate(integration.tip, integration.tip, moved=moved, repaired=repaired)
    for task_id in tasks:
        try:
            head = result_head(ctx, task_id, recorded_result(ctx, task_id)[0])
            merged = merge_trees(ctx.git, candidate.commit, head)
            if merged.conflicts:
                candidate.conflicts[task_id] = merged.conflicts
                continue
            candidate.commit = commit_tree(ctx.git, merged.tree, (candidate.commit, head),
                                           merge_message(ctx, task_id))
            candidate.merges[task_id] = candidate.commit
        except GitError as exc:
            if isinstance(exc, GitTimeout) and ctx.processes.stopping:
                raise  # a hard stop killed it: no verdict on this result or the rest (`MergeGate._check`)
            candidate.errors[task_id] = f"git error while merging: {exc}"
    return candidate


def _advance(ctx: RunContext, candidate: Candidate) -> str:
    """Move the integration ref from the tip the candidate was built on to the candidate (putting it back first if
    an agent moved it); the new tip."""
    integration = ctx.integration
    with integration.lock:
        for _ in range(MERGE_TRIES):
            # the reflog is the record of every position the branch held: each one a candidate that passed
            if set_ref(ctx.git, integration.ref, candidate.commit, candidate.tip,
                       f"orchard: gate passed {shlex.join(candidate.kept)}", reflog=True):
                integration.tip = candidate.commit
                return candidate.commit
            moved = guard(ctx.git, integration)
            if moved:
                note_restored(ctx, moved)
        raise GitError(["update-ref", integration.ref], 1, "the integration branch keeps being moved by an agent")
