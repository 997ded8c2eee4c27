"""A run's timeline, from its journal's events alone (pure): each attempt split into its phases (waiting for a slot,
setup, agent, verify, merge), how many agents ran at once over time, and the critical path the run actually took.

What `orchard report` draws (`ui.run_report`): times are the events' own (seconds since the epoch)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PHASES = ("wait", "setup", "agent", "verify", "merge")


@dataclass(frozen=True, slots=True)
class Phase:
    """One stretch of an attempt: `name` is one of `PHASES`."""

    name: str
    start: float
    end: float


@dataclass
class AttemptSpan:
    """One attempt on the timeline: when it waited, ran and ended, how (`outcome`, `detail`) and its phases."""

    task: str
    number: int
    agent: str = ""
    queued: float | None = None  # when the task last became ready before this attempt (it waited for a slot)
    start: float = 0.0
    end: float | None = None
    outcome: str = ""
    detail: str = ""
    setup: tuple[float, float] | None = None
    verify: tuple[float, float] | None = None
    merged: tuple[float, str] | None = None  # when the merge queue finished with its result, and how
    phases: list[Phase] = field(default_factory=list)

    @property
    def finish(self) -> float:
        """The attempt's last moment on the timeline (its merge, when it reached the queue)."""
        return self.merged[0] if self.merged else (self.end if self.end is not None else self.start)


def attempt_spans(events: Iterable[tuple[float, Mapping[str, Any]]], *, now: float) -> list[AttemptSpan]:
    """Every attempt the events ((time, event) in journal order) tell of, in start order, with its phases (an
    attempt still open ends at `now`)."""
    spans: dict[tuple[str, int], AttemptSpan] = {}
    latest: dict[str, AttemptSpan] = {}
    ready: dict[str, float] = {}
    for ts, e in events:
        kind, task = e.get("type"), e.get("task")
        if not isinstance(task, str):
            continue
        if kind == "task.status" and e.get("status") == "queued":
            ready[task] = ts
        elif kind == "attempt.started":
            span = AttemptSpan(task, int(e["attempt"]), agent=str(e.get("agent", "")), queued=ready.pop(task, None),
                               start=ts)
            spans[(task, span.number)] = latest[task] = span
        elif task in latest:
            _apply(latest[task], kind, e, ts)
    out = sorted(spans.values(), key=lambda s: (s.start, s.task))
    for span in out:
        span.phases = phases_of(span, now=now)
    return out


def _apply(span: AttemptSpan, kind: object, e: Mapping[str, Any], ts: float) -> None:
    """Fold one later event of the task into its latest attempt."""
    if kind == "setup.started":
        span.setup = (ts, ts)
    elif kind == "setup.finished" and span.setup is not None:
        span.setup = (span.setup[0], ts)
    elif kind == "verify.finished":
        span.verify = (ts - float(e.get("duration_s") or 0.0), ts)
    elif kind == "attempt.finished":
        span.end, span.outcome, span.detail = ts, str(e.get("outcome", "")), str(e.get("detail", ""))
    elif kind == "merge.finished" and span.end is not None and span.merged is None:
        span.merged = (ts, str(e.get("result", "")))


def phases_of(span: AttemptSpan, *, now: float) -> list[Phase]:
    """The attempt's phases in order; an empty stretch is left out."""
    end = span.end if span.end is not None else now
    marks: list[tuple[str, float, float]] = []
    if span.queued is not None:
        marks.append(("wait", span.queued, span.start))
    agent_from = span.start
    if span.setup is not None:
        marks.append(("setup", span.setup[0], span.setup[1]))
        agent_from = span.setup[1]
    agent_to = span.verify[0] if span.verify else end
    marks.append(("agent", agent_from, max(agent_from, agent_to)))
    if span.verify is not None:
        marks.append(("verify", span.verify[0], span.verify[1]))
    if span.merged is not None:
        marks.append(("merge", end, span.merged[0]))
    return [Phase(name, start, stop) for name, start, stop in marks if stop > start]


@dataclass(frozen=True, slots=True)
class Step:
    """From `at` on, `running` attempts ran (and `by_agent` per agent entry), until the next step."""

    at: float
    running: int
    by_agent: tuple[tuple[str, int], ...] = ()


def concurrency(spans: Sequence[AttemptSpan], *, now: float) -> list[Step]:
    """How many attempts ran at once over time, in total and per agent: a step at every start and end."""
    changes: list[tuple[float, int, str]] = []
    for s in spans:
        changes += [(s.start, 1, s.agent), (s.end if s.end is not None else now, -1, s.agent)]
    changes.sort(key=lambda c: (c[0], c[1]))  # an end before a start at the same moment
    steps: list[Step] = []
    running: dict[str, int] = {}
    for at, delta, agent in changes:
        running[agent] = running.get(agent, 0) + delta
        step = Step(at, sum(running.values()), tuple(sorted((a, n) for a, n in running.items() if n)))
        if steps and steps[-1].at == at:
            steps[-1] = step
        else:
            steps.append(step)
    return steps


def queue_lengths(events: Iterable[tuple[float, Mapping[str, Any]]]) -> list[tuple[float, int]]:
    """How many tasks waited for a slot over time ((time, event) in journal order): a task is waiting from its
    `queued` status until its attempt starts or its status changes; a step (at, waiting) at every change."""
    waiting: set[str] = set()
    steps: list[tuple[float, int]] = []
    for ts, e in events:
        kind, task = e.get("type"), e.get("task")
        if not isinstance(task, str) or kind not in ("task.status", "attempt.started"):
            continue
        before = len(waiting)
        if kind == "task.status" and e.get("status") == "queued":
            waiting.add(task)
        else:
            waiting.discard(task)
        if len(waiting) == before:
            continue
        if steps and steps[-1][0] == ts:
            steps[-1] = (ts, len(waiting))
        else:
            steps.append((ts, len(waiting)))
    return steps


def critical_path(spans: Sequence[AttemptSpan], depends_on: Mapping[str, Sequence[str]]) -> list[str]:
    """The chain of tasks that decided when the run ended: from the task that finished last, back through the
    dependency that finished last before it, to a task that waited on none."""
    finish: dict[str, float] = {}
    for s in spans:
        finish[s.task] = max(finish.get(s.task, 0.0), s.finish)
    if not finish:
        return []
    path = [max(finish, key=lambda t: finish[t])]
    while True:
        deps = [d for d in depends_on.get(path[-1], ()) if d in finish and d not in path]
        if not deps:
            return list(reversed(path))
        path.append(max(deps, key=lambda d: finish[d]))
