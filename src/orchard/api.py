"""The library entry points: `orchard.run(...)` and `orchard.run_async(...)`.

    result = orchard.run("plan.yaml", repo=".", parallel=4, on_event=print)
    result.status, result.exit_code, result.summary
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from orchard.core.events import OrchardEvent
from orchard.core.model import Plan
from orchard.runtime.session import RunResult, resume_run, start_run
from orchard.vcs import find_repo


def _as_plan(plan_or_path: Plan | str | Path, repo: str | Path) -> Plan:
    if isinstance(plan_or_path, Plan):
        return plan_or_path
    from orchard import plan as plan_loader

    return plan_loader.load(plan_or_path, find_repo(Path(repo).resolve()).root)


async def run_async(plan_or_path: Plan | str | Path, repo: str | Path = ".", parallel: int | None = None,
                    on_event: Callable[[OrchardEvent], None] | None = None, base: str | None = None,
                    land: bool = False) -> RunResult:
    """Run a plan (a `Plan` or a path to one) on `repo`; `on_event` receives every typed event."""
    plan = _as_plan(plan_or_path, repo)
    return await start_run(repo, plan, [on_event] if on_event else [], parallel=parallel, base=base, do_land=land)


def run(plan_or_path: Plan | str | Path, repo: str | Path = ".", parallel: int | None = None,
        on_event: Callable[[OrchardEvent], None] | None = None, base: str | None = None,
        land: bool = False) -> RunResult:
    """Blocking form of `run_async`."""
    return asyncio.run(run_async(plan_or_path, repo, parallel, on_event, base, land))


async def resume_async(repo: str | Path = ".", run_id: str | None = None,
                       on_event: Callable[[OrchardEvent], None] | None = None) -> RunResult:
    """Continue an interrupted run (default: the latest)."""
    return await resume_run(repo, run_id, [on_event] if on_event else [])


def resume(repo: str | Path = ".", run_id: str | None = None,
           on_event: Callable[[OrchardEvent], None] | None = None) -> RunResult:
    """Blocking form of `resume_async`."""
    return asyncio.run(resume_async(repo, run_id, on_event))
