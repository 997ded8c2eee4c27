"""`orchard cancel`, `orchard set` and `orchard agents`: steering a run while it goes.

Each writes a journaled request for the run (`core.control_transitions`); the live session takes it within a second
and records what it did. A run no session holds takes its requests when it resumes. `orchard cancel` without tasks
cancels the whole run, as it always did.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections import Counter
from typing import Any

import click

from orchard.cli.common import stdout_console
from orchard.cli.inspect_cmds import open_store
from orchard.core.model import RunStatus, TaskStatus
from orchard.core.serialize import agent_to_dict
from orchard.core.steering import ADD_AGENT, SET, apply_add_agent, apply_set, split_key
from orchard.core.transitions import Journal
from orchard.errors import NotRecorded, UsageError
from orchard.runtime.layout import Layout
from orchard.runtime.lock import live_holder
from orchard.runtime.requests import request_cancel, steerable
from orchard.store import Store

run_option = click.option("--run", "run_id", help="The run (default: the latest).")


@click.command("cancel")
@click.argument("names", metavar="[TASK...]", nargs=-1)
@run_option
@click.pass_context
def cancel_cmd(ctx: click.Context, names: tuple[str, ...], run_id: str | None) -> int:
    """Cancel TASKs of a run (their agents stop, their dependents are blocked, the rest goes on); without TASKs,
    the whole run (default: the latest; `orchard cancel RUN` names one)."""
    layout, store = open_store(ctx)
    try:
        if len(names) == 1 and run_id is None and _is_run(store, names[0]):
            return _cancel_run(layout, store, names[0])
        if not names:
            return _cancel_run(layout, store, run_id)
        journal = steerable(store, run_id)
        request = request_cancel(journal, names)
        _said(layout, journal, request, f"cancel {', '.join(names)}")
    finally:
        store.close()
    return 0


@click.command("set")
@click.argument("assignments", metavar="KEY=VALUE...", nargs=-1, required=True)
@run_option
@click.pass_context
def set_cmd(ctx: click.Context, assignments: tuple[str, ...], run_id: str | None) -> int:
    """Change a run's limits while it goes: parallel=N, budget_usd=X|none, AGENT.max_parallel=N|none,
    AGENT.paused=true|false. Lowering one stops nothing that runs; it holds new starts."""
    layout, store = open_store(ctx)
    try:
        journal = _open(store, run_id)
        typed = [_typed(text, journal) for text in assignments]
        apply_set(journal.plan, journal.run().parallel, typed)  # what the session will do, checked now
        request = journal.control_requested(SET, json.dumps({"assign": typed}), detail="set " + " ".join(assignments))
        _said(layout, journal, request, "set " + " ".join(assignments))
    finally:
        store.close()
    return 0


@click.group("agents", invoke_without_command=True)
@run_option
@click.option("--json", "json_mode", is_flag=True, help="One JSON object with the agents.")
@click.pass_context
def agents_cmd(ctx: click.Context, run_id: str | None, json_mode: bool) -> int:
    """The run's agents with their running, queued and paused tasks, cost and state; `agents add` adds one."""
    if ctx.invoked_subcommand is not None:
        return 0
    _, store = open_store(ctx)
    try:
        journal = _open(store, run_id, writable=False)
        rows = agent_rows(journal)
    finally:
        store.close()
    out = stdout_console()
    if json_mode:
        click.echo(json.dumps({"run_id": journal.run_id, "agents": rows}, indent=2))
        return 0
    for row in rows:
        limit = row["max_parallel"] or "-"
        out.print(f"{row['name']:<16} {row['type']:<8} {row['state']:<12} running {row['running']}/{limit} "
                  f"queued {row['queued']} paused {row['paused']} ${row['cost_usd']:.2f}")
    return 0


@agents_cmd.command("add")
@click.argument("name")
@click.option("--type", "kind", required=True, help="The agent kind: claude, codex, gemini, aider, cursor or command.")
@click.option("--max-parallel", type=click.IntRange(min=1, max=2**62), help="Its attempts at once.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="An option of the agent entry, as in a plan (the value is read as YAML); repeatable.")
@click.option("--fallback-for", "fallback_for", multiple=True, metavar="AGENT",
              help="Use it while AGENT is paused (a rate limit, `orchard set AGENT.paused=true`); repeatable.")
@run_option
@click.pass_context
def agents_add_cmd(ctx: click.Context, name: str, kind: str, max_parallel: int | None, options: tuple[str, ...],
                   fallback_for: tuple[str, ...], run_id: str | None) -> int:
    """Add an agent entry to a run; tasks may use it through the fallbacks of their own agent."""
    layout, store = open_store(ctx)
    try:
        journal = _open(store, run_id)
        from orchard.plan.agents import agent_from_flags

        try:
            spec = agent_from_flags(name, kind, max_parallel, options)
            data = {"name": name, "agent": agent_to_dict(spec), "fallback_for": list(fallback_for)}
            apply_add_agent(journal.plan, journal.run().parallel, data)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        request = journal.control_requested(ADD_AGENT, json.dumps(data), detail=f"add agent {name} ({kind})")
        _said(layout, journal, request, f"add agent {name}")
    finally:
        store.close()
    return 0


def agent_rows(journal: Journal) -> list[dict[str, Any]]:
    """Per agent of the run's plan as it is now: kind, limit, state, tasks running (on it), queued and paused (of
    it), cost of its attempts."""
    tasks, attempts = journal.tasks(), journal.attempts()
    waiting = Counter((t.agent, t.status) for t in tasks)
    running = Counter(a.agent for a in attempts if a.finished_at is None)
    cost: dict[str, float] = {}
    for a in attempts:
        cost[a.agent] = cost.get(a.agent, 0.0) + a.cost_usd
    live = journal.run().status is RunStatus.RUNNING
    rows = []
    for name, spec in journal.plan.agents.items():
        paused = waiting[(name, TaskStatus.PAUSED)]
        state = ("paused" if spec.option("paused", False) else "waiting" if paused and not running[name]
                 else "busy" if running[name] else "idle" if live else "stopped")
        rows.append({"name": name, "type": spec.type, "max_parallel": spec.max_parallel, "state": state,
                     "running": running[name] if live else 0, "queued": waiting[(name, TaskStatus.QUEUED)],
                     "paused": paused, "cost_usd": round(cost.get(name, 0.0), 6),
                     "fallback": list(spec.option("fallback", ()))})
    return rows


def _is_run(store: Store, name: str) -> bool:
    try:
        store.run(name)
    except NotRecorded:
        return False
    return True


def _open(store: Store, run_id: str | None, *, writable: bool = True) -> Journal:
    """The run's journal; a request for a run that cannot go on any more is refused."""
    from orchard.runtime.session import open_journal

    return steerable(store, run_id) if writable else open_journal(store, store.run(run_id).id)


def _said(layout: Layout, journal: Journal, request: int, what: str) -> None:
    """Tell the user who will carry the request out."""
    holder = live_holder(layout.lock_file)
    out = stdout_console()
    if holder and holder.get("run") == journal.run_id:
        out.print(f"asked run {journal.run_id} (pid {holder['pid']}) to {what} (request {request})")
    else:
        out.print(f"run {journal.run_id} is not running: request {request} ({what}) applies when it resumes "
                  f"(orchard resume {journal.run_id})")


def _typed(text: str, journal: Journal) -> tuple[str, Any]:
    """One `KEY=VALUE` of `orchard set`, its value checked and typed as the plan's own field would be."""
    from orchard.plan import fields as f

    key, eq, raw = text.partition("=")
    if not eq:
        raise UsageError(f"'{text}': expected KEY=VALUE")
    try:
        _, setting = split_key(key.strip(), journal.plan)
        return key.strip(), f.setting_value(setting, raw)
    except (ValueError, f.FieldError) as exc:
        raise UsageError(f"orchard set {text}: {exc}") from None


def _cancel_run(layout: Layout, store: Store, run_id: str | None) -> int:
    """The whole run: a live one is signalled and stops its agents; a dead one is cancelled here."""
    from orchard.runtime.session import open_journal

    run = store.run(run_id)
    journal = open_journal(store, run.id)
    holder = live_holder(layout.lock_file)
    out = stdout_console()
    if holder and holder.get("run") == run.id:
        journal.cancel_requested()
        with contextlib.suppress(ProcessLookupError):  # it may have ended just now
            os.kill(int(holder["pid"]), signal.SIGTERM)
            out.print(f"asked run {run.id} (pid {holder['pid']}) to cancel")
            return 0
    if run.status in (RunStatus.COMPLETED, RunStatus.CANCELLED):
        raise UsageError(f"run {run.id} is already {run.status}")
    from orchard.runtime.recovery import cancel_dead_run

    # An orchestrator that died (kill -9, a crash) may have left its agents running: they are stopped too.
    reaped = cancel_dead_run(journal, layout.root)
    stopped = f" (stopped {reaped} leftover agent process group(s))" if reaped else ""
    out.print(f"run {run.id} cancelled{stopped}")
    return 0
