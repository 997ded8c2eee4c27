"""What the merge gate has done in a run, read from its journal (`check.started` / `check.finished` events): each
task's standing at the gate and the run's check figures, for `status --json`, the summary and the dashboard."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchard.core.model import TaskStatus

STARTED, FINISHED = "check.started", "check.finished"


@dataclass
class GateFigures:
    """The checks of one run: how many finished and failed, their time, and the one running (its tasks)."""

    count: int = 0
    failed: int = 0
    seconds: float = 0.0
    running: tuple[str, ...] = ()
    verdicts: dict[str, str] = field(default_factory=dict)  # task → passed | failed, its latest verdict

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "failed": self.failed, "total_s": round(self.seconds, 3),
                "running": list(self.running)}


def gate_figures(events: Iterable[Mapping[str, Any]]) -> GateFigures:
    """Fold the run's check events, in journal order."""
    figures = GateFigures()
    last: tuple[int, tuple[str, ...]] = (0, ())  # the latest check begun (one a crash cut short stays unfinished)
    for event in events:
        if event["type"] == STARTED:
            last = (event["check"], tuple(event["tasks"]))
        elif event["type"] == FINISHED:
            last = (0, ()) if event["check"] == last[0] else last
            figures.count += 1
            figures.failed += 0 if event["passed"] else 1
            figures.seconds += float(event.get("duration_s", 0.0))
            figures.verdicts.update(dict.fromkeys(event.get("merged", ()), "passed"))
            figures.verdicts.update(dict.fromkeys(event.get("failed", ()), "failed"))
    figures.running = last[1]
    return figures


def task_gate(figures: GateFigures, task_id: str, status: TaskStatus) -> str | None:
    """A task's `gate` in `status --json`: waiting (its result is in the train), else its latest verdict
    (passed, failed), else None (not at the gate yet, or no gate)."""
    if status is TaskStatus.MERGING:
        return "waiting"
    return figures.verdicts.get(task_id)


def passed_candidates(events: Iterable[Mapping[str, Any]]) -> set[str]:
    """The candidates whose check passed: the only trees a gated integration branch may point at (besides its base)."""
    started: dict[int, str] = {}
    passed: set[str] = set()
    for event in events:
        if event["type"] == STARTED:
            started[event["check"]] = str(event["candidate"])
        elif event["type"] == FINISHED and event["passed"] and event["check"] in started:
            passed.add(started[event["check"]])
    return passed


def ungated_tip_problem(events: Iterable[Mapping[str, Any]], *, tip: str, base: str, command: str) -> str:
    """Why a gated run's tip may not be landed ("" when it may: the base, or a candidate that passed)."""
    if tip == base or tip in passed_candidates(events):
        return ""
    return (f"its integration tip {tip[:12]} is not a candidate that passed the gate `{command}`, so it was never "
            "checked as a whole; nothing was landed")
