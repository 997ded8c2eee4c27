"""The library entry points: `orchard.run(...)` and `orchard.run_async(...)`.

    result = orchard.run("plan.yaml", repo=".", parallel=4, on_event=print)
    result.status, result.exit_code, result.summary

`ray_address="HOST:PORT"` (or a plan's `executor: ray` with $RAY_ADDRESS) runs the attempts on the nodes of a Ray
cluster (`orchard.cluster`; `pip install 'orchard[ray]'`). `records=orchard.testing.MemoryStore()` keeps the
run's journal in memory instead of `.orchard/state.db`; `dry_run=True` runs no agent (each task commits an empty
change), keeps its journal in memory and removes the run's branches at the end (`runtime.dryrun`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from orchard.core.events import OrchardEvent
from orchard.core.journal import Records
from orchard.core.model import Plan
from orchard.runtime.session import Options, RunResult, resume_run, start_run
from orchard.vcs import find_repo


def _as_plan(plan_or_path: Plan | str | Path, repo: str | Path) -> Plan:
    if isinstance(plan_or_path, Plan):
        return plan_or_path
    from orchard import plan as plan_loader

    return plan_loader.load(plan_or_path, find_repo(Path(repo).resolve()).root)


def _options(on_event: Callable[[OrchardEvent], None] | None, records: Records | None, land: bool,
             output: bool = False, ray_address: str | None = None) -> Options:
    from orchard.cluster.executor import planned_executor, ray_executor
    from orchard.plan.extend import add_tasks

    executor = ray_executor(ray_address) if ray_address else planned_executor()  # else as the plan's `executor`
    return Options(observers=(on_event,) if on_event else (), records=records, land=land, output=output,
                   extend=add_tasks, executor=executor)


async def run_async(plan_or_path: Plan | str | Path, repo: str | Path = ".", parallel: int | None = None,
                    on_event: Callable[[OrchardEvent], None] | None = None, *, base: str | None = None,
                    land: bool = False, records: Records | None = None, output: bool = False,
                    dry_run: bool = False, ray_address: str | None = None) -> RunResult:
    """Run a plan (a `Plan` or a path to one) on `repo`; `on_event` receives every typed event (with `output`,
    also `AgentOutput`: every line the agents write). `dry_run`: the plan's dry run, recorded in `records` if
    given, else in memory. `ray_address`: the attempts run on that Ray cluster's nodes."""
    plan = _as_plan(plan_or_path, repo)
    options = _options(on_event, records, land, output, ray_address)
    if dry_run:
        from orchard.testing.memory import MemoryStore

        options = replace(options, dry_run=True, records=records or MemoryStore())
    return await start_run(repo, plan, parallel=parallel, base=base, options=options)


def run(plan_or_path: Plan | str | Path, repo: str | Path = ".", parallel: int | None = None,
        on_event: Callable[[OrchardEvent], None] | None = None, *, base: str | None = None,
        land: bool = False, records: Records | None = None, output: bool = False,
        dry_run: bool = False, ray_address: str | None = None) -> RunResult:
    """Blocking form of `run_async`."""
    return asyncio.run(run_async(plan_or_path, repo, parallel, on_event, base=base, land=land, records=records,
                                 output=output, dry_run=dry_run, ray_address=ray_address))


async def resume_async(repo: str | Path = ".", run_id: str | None = None,
                       on_event: Callable[[OrchardEvent], None] | None = None, *,
                       records: Records | None = None) -> RunResult:
    """Continue an interrupted run (default: the latest)."""
    return await resume_run(repo, run_id, options=_options(on_event, records, False))


def resume(repo: str | Path = ".", run_id: str | None = None,
           on_event: Callable[[OrchardEvent], None] | None = None, *, records: Records | None = None) -> RunResult:
    """Blocking form of `resume_async`."""
    return asyncio.run(resume_async(repo, run_id, on_event, records=records))
