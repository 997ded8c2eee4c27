"""`orchard show`: what a run recorded when it started, or everything recorded about one of its tasks (its
attempts, their outcomes and cost, each agent's own summary, the task that added it)."""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from orchard.cli.common import stdout_console
from orchard.cli.inspect_cmds import open_store
from orchard.core.durations import format_duration
from orchard.core.records import AttemptRecord, RunRecord, elsewhere
from orchard.core.safe_text import safe_text
from orchard.core.timeline import AttemptSpan, attempt_spans
from orchard.errors import NotRecorded, UsageError
from orchard.runtime.layout import Layout
from orchard.store import Store


@click.command("show")
@click.argument("target", metavar="[RUN|TASK]", required=False)
@click.option("--run", "run_id", metavar="RUN", help="The run TASK belongs to (default: the latest).")
@click.option("--json", "json_mode", is_flag=True, help="Print it as JSON.")
@click.pass_context
def show_cmd(ctx: click.Context, target: str | None, run_id: str | None, json_mode: bool) -> int:
    """Show what a run recorded when it started (default: the latest): its base, plan, preflight and the
    environment its setup and verify run with; or, given a TASK, its attempts and what each agent said it did."""
    layout, store = open_store(ctx)
    try:
        if target is not None and run_id is None and any(r.id == target for r in store.runs()):
            run_id, target = target, None
        run = store.run(run_id)
        doc = _run_doc(store, run) if target is None else _task_doc(store, run, target, layout=layout)
    finally:
        store.close()
    if json_mode:
        click.echo(json.dumps(doc, indent=2))
    elif target is None:
        _print_run(doc)
    else:
        _print_task(doc)
    return 0


def _run_doc(store: Store, run: RunRecord) -> dict[str, Any]:
    plan = store.plan(run.id)
    return {"id": run.id, "status": str(run.status), "reason": run.reason, "base": run.base,
            "base_commit": run.base_commit, "integration_branch": run.integration_branch, "plan": run.plan_source,
            "parallel": run.parallel, "preflight": plan.preflight,
            "gate": None if plan.gate is None else asdict(plan.gate),
            "baseline_red": json.loads(run.baseline_red) if run.baseline_red else [],
            "environment": run.recorded_environment()}


def _task_doc(store: Store, run: RunRecord, task_id: str, *, layout: Layout) -> dict[str, Any]:
    try:
        task = store.task(run.id, task_id)
    except NotRecorded:
        raise UsageError(f"no run and no task '{task_id}' in run {run.id} (orchard status lists its tasks)") from None
    plan = store.plan(run.id)
    spec = plan.task(task_id) if task_id in plan else None
    children = [t.task_id for t in store.tasks(run.id) if t.parent == task_id]
    kept = layout.worktree(run.id, task_id)
    spans = {s.number: s for s in _spans(store, run.id, task_id)}
    return {"run": run.id, "id": task.task_id, "name": spec.name if spec else None, "status": str(task.status),
            "agent": task.agent, "depends_on": list(spec.depends_on) if spec else [], "parent": task.parent,
            "children": children, "error": task.error, "conflicts": task.conflicts or None,
            "feedback": task.feedback or None, "merged_commit": task.merged_commit, "branch": task.branch,
            "worktree": str(kept.resolve()) if kept.exists() else None,
            "attempts": [_attempt_doc(a, spans.get(a.number), layout.prompt_file(run.id, task_id, a.number))
                         for a in store.attempts(run.id, task_id)]}


def _spans(store: Store, run_id: str, task_id: str) -> list[AttemptSpan]:
    """The task's attempts on the run's timeline, with their phases (`core.timeline`)."""
    marks = store.event_times(run_id)
    events = [data for _, data in store.events(run_id)]
    mine = [(ts, e) for (_, ts), e in zip(marks, events, strict=False) if e.get("task") == task_id]
    return attempt_spans(mine, now=time.time())


def _attempt_doc(a: AttemptRecord, span: AttemptSpan | None, prompt: Path) -> dict[str, Any]:
    duration = round(a.finished_at - a.started_at, 3) if a.finished_at is not None else None
    return {"number": a.number, "agent": a.agent, "host": a.host, "outcome": a.outcome.value if a.outcome else None,
            "detail": a.detail, "duration_s": duration, "cost_usd": a.cost_usd, "tokens_in": a.tokens_in,
            "tokens_out": a.tokens_out, "start_commit": a.start_commit, "end_commit": a.end_commit,
            "log": a.log_path, "prompt": str(prompt) if prompt.exists() else None, "summary": a.summary,
            "phases": {p.name: round(p.end - p.start, 3) for p in span.phases} if span else {}}


def _print_run(doc: dict[str, Any]) -> None:
    out = stdout_console()
    for key in ("id", "status", "reason", "base", "base_commit", "integration_branch", "plan", "parallel",
                "preflight"):
        if doc[key] not in ("", None):
            out.print(safe_text(f"{key}: {doc[key]}"), soft_wrap=True)
    gate = doc["gate"]
    if gate is not None:
        out.print(safe_text(f"gate: {shlex.join(gate['verify'])} (batch {gate['batch']}, each check within "
                            f"{format_duration(gate['timeout_s'])})"), soft_wrap=True)
    for command in doc["baseline_red"]:
        out.print(safe_text(f"red on the base before any agent: {command}"), soft_wrap=True)
    out.print("environment of setup and verify (recorded at `orchard run`):" if doc["environment"]
              else "environment: none recorded (setup and verify take orchard's own)")
    for name, value in sorted(doc["environment"].items()):
        out.print(safe_text(f"  {name}={value}"), soft_wrap=True)


def _print_task(doc: dict[str, Any]) -> None:
    out = stdout_console()
    title = doc["id"] + (f" ({doc['name']})" if doc["name"] else "")
    out.print(safe_text(f"task {title} of run {doc['run']}: {doc['status']}"), soft_wrap=True)
    for key in ("depends_on", "children"):
        if doc[key]:
            out.print(safe_text(f"{key}: {', '.join(doc[key])}"), soft_wrap=True)
    for key in ("parent", "error", "conflicts", "merged_commit", "worktree"):
        if doc[key]:
            out.print(safe_text(f"{key}: {doc[key]}" + (" (kept for inspection)" if key == "worktree" else "")),
                      soft_wrap=True)
    if doc["feedback"]:
        out.print("feedback for the next attempt:")
        for line in doc["feedback"].splitlines()[:20]:
            out.print(safe_text(f"  {line}"), soft_wrap=True)
    for a in doc["attempts"]:
        took = format_duration(a["duration_s"]) if a["duration_s"] is not None else "running"
        out.print(safe_text(f"\nattempt {a['number']} on {a['agent']}{elsewhere(a['host'])}: "
                            f"{a['outcome'] or 'running'} ({took}, "
                            f"${a['cost_usd']:.4f}){' · ' + a['detail'] if a['detail'] else ''}"), soft_wrap=True)
        if a["phases"]:
            out.print("  phases: " + " · ".join(f"{name} {format_duration(s)}" for name, s in a["phases"].items()))
        out.print(safe_text(f"  log: {a['log']}"), soft_wrap=True)
        if a["prompt"]:
            out.print(safe_text(f"  prompt: {a['prompt']}"), soft_wrap=True)
        if a["summary"]:
            out.print("  summary:")
            for line in a["summary"].splitlines():
                out.print(safe_text(f"    {line}"), soft_wrap=True)
