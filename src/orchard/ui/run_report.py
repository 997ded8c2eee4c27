"""`orchard report`: the document of one run (figures, each task with its attempts split into phases, concurrency
over time, cost, the critical path the run took) and its terminal rendering; `ui.html_report` draws the same
document as one self-contained HTML file.

The document is built from the store alone plus what the caller read from git and the logs (`files`, `logs`), so
the figures are the summary's and `status --json`'s, never recomputed another way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from orchard.core.durations import format_duration
from orchard.core.events import iso
from orchard.core.journal import Records
from orchard.core.records import AttemptRecord
from orchard.core.safe_text import safe_line, safe_text
from orchard.core.simulate import simulate
from orchard.core.summary import summarize
from orchard.core.timeline import PHASES, AttemptSpan, attempt_spans, concurrency, critical_path, queue_lengths
from orchard.errors import OrchardError
from orchard.ui.dashboard import STYLE
from orchard.ui.report import summary_text

FileStat = tuple[str, int | None, int | None]  # path, lines added, removed (None for a binary file)
TIMELINE_WIDTH = 60


def report_document(records: Records, run_id: str, *, now: float, files: Mapping[str, Sequence[FileStat]],
                    logs: Mapping[str, str]) -> dict[str, Any]:
    """The report of run `run_id` (figures as of `now`); `files`: each task's merged change by file, `logs`: the
    tail of each task's latest log."""
    run = records.run(run_id)
    summary = summarize(records, run.id, now)
    times = [ts for _, ts in records.event_times(run.id)]
    events = [data for _, data in records.events(run.id)]
    spans = attempt_spans(zip(times, events, strict=False), now=now)
    queue = queue_lengths(zip(times, events, strict=False))
    plan = _plan(records, run.id)
    depends = {t.id: list(t.depends_on) for t in plan.tasks} if plan else {}
    attempts: dict[str, list[AttemptRecord]] = {}
    for a in records.attempts(run.id):
        attempts.setdefault(a.task_id, []).append(a)
    by_task: dict[str, list[AttemptSpan]] = {}
    for span in spans:
        by_task.setdefault(span.task, []).append(span)
    return {
        "run": {"id": run.id, "status": str(run.status), "base": run.base, "integration_branch":
                run.integration_branch, "started_at": iso(run.started_at), "finished_at": iso(run.finished_at),
                "t0": run.started_at, "parallel": run.parallel,
                "estimated_makespan_s": round(simulate(plan, run.parallel).makespan_s, 3) if plan else None},
        "summary": summary,
        "tasks": [_task(t.task_id, str(t.status), t.agent, t.error, depends.get(t.task_id, []),
                        attempts.get(t.task_id, []), by_task.get(t.task_id, []), files.get(t.task_id, ()),
                        logs.get(t.task_id, ""), name=plan.task(t.task_id).name if plan and t.task_id in plan else None)
                  for t in records.tasks(run.id)],
        "concurrency": [{"at": s.at, "running": s.running, "by_agent": dict(s.by_agent)}
                        for s in concurrency(spans, now=now)],
        "queue": [{"at": at, "queued": n} for at, n in queue],
        "max_parallel": {name: spec.max_parallel for name, spec in plan.agents.items()} if plan else {},
        "critical_path": critical_path(spans, depends),
    }


def _plan(records: Records, run_id: str) -> Any:
    """The run's plan snapshot, or None when it cannot be read (the report goes on without estimates and edges)."""
    try:
        return records.plan(run_id)
    except OrchardError:
        return None


def _task(task_id: str, status: str, agent: str, error: str, depends_on: list[str], records: list[AttemptRecord],
          spans: list[AttemptSpan], files: Sequence[FileStat], log: str, *, name: str | None) -> dict[str, Any]:
    span_of = {s.number: s for s in spans}
    phases = {p: 0.0 for p in PHASES}
    for s in spans:
        for phase in s.phases:
            phases[phase.name] += phase.end - phase.start
    return {
        "id": task_id, "name": name, "status": status, "agent": records[-1].agent if records else agent,
        "depends_on": depends_on, "error": error or None,
        "cost_usd": round(sum((a.cost_usd for a in records), 0.0), 6),
        "tokens_in": sum(a.tokens_in for a in records), "tokens_out": sum(a.tokens_out for a in records),
        "phases_s": {p: round(v, 3) for p, v in phases.items()},
        "files": [{"path": p, "added": a, "removed": r} for p, a, r in files],
        "summary": next((a.summary for a in reversed(records) if a.summary), ""),
        "log_tail": log,
        "commands": [f"orchard logs {task_id} --run {records[0].run_id}" if records else f"orchard logs {task_id}",
                     f"orchard diff {task_id}", f"orchard show {task_id}"],
        "attempts": [attempt_doc(a, span_of.get(a.number)) for a in records],
    }


def attempt_doc(a: AttemptRecord, span: AttemptSpan | None = None) -> dict[str, Any]:
    """One attempt as the report and the web dashboard's task page show it (its phases, given its span)."""
    return {"number": a.number, "agent": a.agent, "host": a.host, "outcome": str(a.outcome) if a.outcome else None,
            "detail": a.detail, "start": a.started_at, "end": a.finished_at, "cost_usd": a.cost_usd,
            "phases": [{"name": p.name, "start": p.start, "end": p.end} for p in (span.phases if span else [])]}


# ---- the terminal -----------------------------------------------------------------------------------------------


def report_text(doc: dict[str, Any]) -> RenderableType:
    """The report on a terminal: the summary, a table of tasks with their phases, and a text timeline."""
    return Group(summary_text(doc["summary"]), _estimate_line(doc), Text(""), _task_table(doc), Text(""),
                 *_timeline(doc))


def _estimate_line(doc: dict[str, Any]) -> Text:
    estimate = doc["run"]["estimated_makespan_s"]
    path = " → ".join(doc["critical_path"])
    said = f"estimated makespan {format_duration(estimate)} · " if estimate is not None else ""
    return Text(safe_line(f"{said}critical path as run: {path or 'none'}"))


def _task_table(doc: dict[str, Any]) -> Table:
    """A row per task; a column nothing in the run has (no setup, no cost …) is left out, to keep it narrow."""
    names = ("task", "status", "attempts", *PHASES, "cost", "files", "error")
    rows = [_task_row(t) for t in doc["tasks"]]
    shown = [i for i, name in enumerate(names) if i < 3 or any(str(row[i]) for row in rows)]
    table = Table(header_style="bold", box=None, pad_edge=False)
    for i in shown:
        name = names[i]
        table.add_column(name, overflow="fold" if name == "error" else "ellipsis", no_wrap=name != "error",
                         justify="right" if name in (*PHASES, "cost", "files") else "left")
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    return table


def _task_row(t: dict[str, Any]) -> list[Text | str]:
    outcomes = " → ".join(a["outcome"] or "open" for a in t["attempts"]) or "-"
    error = (t["error"] or "").splitlines()[0] if t["error"] else ""
    return [Text(safe_line(t["id"])), Text(t["status"], style=STYLE.get(t["status"], "")), outcomes,
            *(format_duration(t["phases_s"][p]) if t["phases_s"][p] else "" for p in PHASES),
            f"${t['cost_usd']:.2f}" if t["cost_usd"] else "", str(len(t["files"])) if t["files"] else "",
            Text(safe_text(error))]


MARK = {"wait": "·", "setup": "s", "agent": "█", "verify": "v", "merge": "m"}


def _timeline(doc: dict[str, Any], width: int = TIMELINE_WIDTH) -> list[Text]:
    """A row per task: its attempts' phases as characters on a shared time axis."""
    spans = [(p["start"], p["end"]) for t in doc["tasks"] for a in t["attempts"] for p in a["phases"]]
    if not spans:
        return []
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    scale = width / max(end - start, 1e-9)
    label = max(len(t["id"]) for t in doc["tasks"])
    lines = [Text(f"timeline: {format_duration(end - start)} ({' '.join(f'{m} {p}' for p, m in MARK.items())})",
                  style="bold")]
    for t in doc["tasks"]:
        row = [" "] * width
        for p in (p for a in t["attempts"] for p in a["phases"]):
            first = int((p["start"] - start) * scale)
            last = max(int((p["end"] - start) * scale), first + 1)  # a phase shorter than a cell still shows
            for i in range(max(first, 0), min(last, width)):
                row[i] = MARK[p["name"]]
        lines.append(Text.assemble(safe_line(t["id"]).ljust(label), " │", ("".join(row), STYLE.get(t["status"], "")),
                                   "│"))
    return lines
