"""A check outside any task: a worktree from the pool at a commit, set up as a task's would be, and one command
run there. The preflight runs a verify on the base so (`runtime.preflight`); the gate runs `integration_verify` on
each candidate (`runtime.gate`). The worktree is parked set up, so the next use skips setup while its inputs hold.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchard.core.model import Environment, Task
from orchard.errors import GitError
from orchard.runtime.context import RunContext
from orchard.runtime.environment import PhaseResult, copy_included, included_files, run_phase, setup_stamp
from orchard.runtime.resources import task_variables
from orchard.runtime.sandbox import check_box
from orchard.runtime.workspace import attempt_variables
from orchard.vcs import delete_ref


@dataclass(frozen=True)
class CheckRun:
    """What to check: `command` at `commit` in the worktree `link` holds (on `branch`), with `environment`; `task`
    lends its agent's sandbox, its id to the variables and what its verify may see of orchard's environment."""

    link: str  # the hold's name beside the tasks' links: no task id starts with "."
    branch: str
    commit: str
    environment: Environment
    task: Task
    command: tuple[str, ...]
    timeout_s: float
    log: Path


@dataclass(frozen=True)
class CheckOutcome:
    """Where the check stopped (`prepare`, `setup`, `precheck` or `command`) and what happened there."""

    stage: str
    result: PhaseResult


async def run_check(ctx: RunContext, check: CheckRun, *,
                    precheck: Callable[[Path], str] | None = None) -> CheckOutcome:
    """Take a pooled worktree at the commit, set it up, run `precheck` (a reason not to run the command, or "")
    and then the command; the worktree is parked again whatever happens."""
    link = ctx.layout.worktrees(ctx.run_id) / check.link
    slot, port = ctx.resources.acquire(check.link, check.environment.ports)
    try:
        worktree = await asyncio.to_thread(_prepare, ctx, link, check)
        variables = task_variables(run_id=ctx.run_id, task_id=check.task.id, root=str(ctx.user_repo.root),
                                   worktree=str(worktree), slot=slot, port=port, environment=check.environment)
        env = attempt_variables(ctx.run_id, check.task.id, 0, worktree, tuple(variables.items()))
        setup = await _set_up(ctx, check, worktree=worktree, env=env)
        if not setup.passed:
            return CheckOutcome("setup", setup)
        reason = precheck(worktree) if precheck else ""
        if reason:
            return CheckOutcome("precheck", PhaseResult(False, reason, started=False))
        result = await run_phase(ctx.host, phase="verify", commands=(check.command,), task_id=check.link,
                                 box=check_box(ctx, check.task.agent, worktree), worktree=worktree,
                                 log_path=check.log, env=env,
                                 timeout_s=check.timeout_s, env_pass=check.task.verify_env_pass)
        return CheckOutcome("command", result)
    except (GitError, OSError) as exc:
        return CheckOutcome("prepare", PhaseResult(False, f"cannot prepare a worktree for the check: {exc}",
                                                   started=False))
    finally:
        ctx.resources.release(check.link)
        await asyncio.to_thread(_release, ctx, link, check.branch)


def _prepare(ctx: RunContext, link: Path, check: CheckRun) -> Path:
    worktree = ctx.pool.acquire(link, check.branch, check.commit)
    copy_included(ctx.user_repo, worktree, included_files(ctx.user_repo, check.environment))
    return worktree


async def _set_up(ctx: RunContext, check: CheckRun, *, worktree: Path, env: dict[str, str]) -> PhaseResult:
    """The environment's setup, stamped like a task's so a later use of this worktree skips it."""
    if not check.environment.setup:
        return PhaseResult(True)
    stamp = await asyncio.to_thread(setup_stamp, ctx.host, worktree, check.environment)
    if stamp.current:
        return PhaseResult(True, skipped=True)
    result = await run_phase(ctx.host, phase="setup", commands=check.environment.setup, task_id=check.link,
                             box=check_box(ctx, check.task.agent, worktree), worktree=worktree,
                             log_path=check.log, env=env,
                             timeout_s=check.environment.setup_timeout_s)
    stamp.save(result.passed)
    return result


def _release(ctx: RunContext, link: Path, branch: str) -> None:
    ctx.pool.release(link, max(ctx.width, 1))
    with contextlib.suppress(GitError):
        delete_ref(ctx.git, "refs/heads/" + branch)
