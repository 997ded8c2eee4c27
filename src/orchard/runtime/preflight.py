"""Before any agent starts (the plan's `preflight`): each distinct verify command runs once on the untouched base, in
a pooled worktree set up as a task's would be. A verify that cannot even run there (its program missing, its tests
not importable, nothing collected) or a setup that fails stops the run with exit 3 and the output, nothing spent on
agents; a verify that fails on the base is remembered (`runs.baseline_red`), so the tasks' failures of it say they
were red before their agent instead of blaming it. The worktree is parked set up: the first task skips its setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from orchard.core.events import PreflightChecked
from orchard.core.model import Environment, Plan, RunStatus, Task
from orchard.errors import EnvironmentProblem, GitError
from orchard.runtime.attempt import attempt_variables
from orchard.runtime.context import RunContext
from orchard.runtime.environment import PhaseResult, copy_included, included_files, run_phase, setup_stamp
from orchard.runtime.resources import task_variables
from orchard.vcs import delete_ref

PREFLIGHT_REASON = "preflight:"  # how the reason of a run its preflight stopped begins
LINK = ".preflight"  # the preflight's hold on a pooled worktree, beside the tasks' links: no task id starts with "."
PYTEST_CANNOT_RUN = frozenset({2, 3, 4, 5})  # interrupted (collection errors), internal error, usage, no tests
SHELL_CANNOT_RUN = frozenset({126, 127})  # not executable, not found


class PreflightFailed(EnvironmentProblem):
    """A verify command cannot run on the base, or the environment's setup fails there: no agent would do better."""


@dataclass(frozen=True)
class Check:
    """One distinct verify command and the environment it runs in; `task` is the first task that has it."""

    verify: tuple[str, ...]
    task: Task
    environment: Environment

    @property
    def command(self) -> str:
        return shlex.join(self.verify)


def checks(plan: Plan) -> list[Check]:
    """The distinct (verify, environment, variables passed) of the plan's tasks, in plan order; none when the plan's
    `preflight` does not ask to run them."""
    if plan.preflight in ("off", "check") or not any(t.verify for t in plan.tasks):
        return []
    found: dict[object, Check] = {}
    for task in plan.tasks:
        if task.verify:
            environment = plan.environment_of(task.id)
            found.setdefault((task.verify, environment, task.verify_env_pass),
                             Check(task.verify, task, environment))
    return list(found.values())


def preflight_owed(ctx: RunContext) -> bool:
    """Whether a resumed run still owes its preflight: its preflight stopped it, or a crash cut it short (fewer
    checks journaled than the plan has); a leftover hold on a pooled worktree is dropped when it does not."""
    if ctx.journal.run().reason.startswith(PREFLIGHT_REASON):
        return True
    if ctx.journal.count_events(PreflightChecked.type) < len(checks(ctx.plan)):
        return True
    link = ctx.layout.worktrees(ctx.run_id) / LINK
    if link.is_symlink() or link.exists():
        ctx.pool.discard(link)
    return False


async def run_preflight(ctx: RunContext) -> None:
    """Run every check on the base; raise PreflightFailed (the run recorded failed) at the first that cannot run."""
    for number, check in enumerate(checks(ctx.plan), start=1):
        ctx.journal.noted(f"preflight: running verify `{check.command}` on the base"
                          + (", after the environment's setup," if check.environment.setup else "")
                          + " before any agent starts")
        outcome, result = await _check(ctx, check, number)
        ctx.journal.preflight_checked(check.command, outcome=outcome, duration_s=result.duration_s,
                                      detail=result.detail)
        if ctx.processes.stopping:
            return  # interrupted: the engine ends the run as interrupted
        if outcome == "red":
            ctx.journal.noted(f"verify `{check.command}` fails on the base, before any agent changed anything; its "
                              f"failures in tasks will say so (baseline_red):\n{result.detail}", level="warning")
        elif outcome == "cannot_start":
            reason = f"{PREFLIGHT_REASON} {result.detail}"
            ctx.journal.run_finished(RunStatus.FAILED, reason=reason)
            raise PreflightFailed(f"{reason}\nNo agent was started. Fix the plan's verify or environment (or set "
                                  f"`preflight: off` to skip this check) and run again.")


async def _check(ctx: RunContext, check: Check, number: int) -> tuple[str, PhaseResult]:
    """Set a pooled worktree at the base up like the task's, run the verify there; the verdict and what happened."""
    link = ctx.layout.worktrees(ctx.run_id) / LINK
    branch = f"orchard/{ctx.run_id}/preflight"
    log = ctx.layout.run_dir(ctx.run_id) / "logs" / f"{LINK}.{number}.log"
    slot, port = ctx.resources.acquire(LINK, check.environment.ports)
    try:
        worktree = await asyncio.to_thread(_prepare, ctx, link, branch, check.environment)
        variables = task_variables(run_id=ctx.run_id, task_id=check.task.id, root=str(ctx.user_repo.root),
                                   worktree=str(worktree), slot=slot, port=port, environment=check.environment)
        env = attempt_variables(ctx.run_id, check.task.id, 0, worktree, tuple(variables.items()))
        setup = await _set_up(ctx, check, worktree=worktree, log=log, env=env)
        if not setup.passed:
            return "cannot_start", setup
        missing = _missing_program(check.verify, worktree, ctx.environ.get("PATH", os.defpath))
        if missing:
            return "cannot_start", PhaseResult(False, missing, started=False)
        result = await run_phase(ctx, phase="verify", commands=(check.verify,), task_id=LINK, agent=check.task.agent,
                                 worktree=worktree, log_path=log, env=env, timeout_s=check.task.timeout_s,
                                 env_pass=check.task.verify_env_pass)
        return verdict_of(check.verify, result), result
    except (GitError, OSError) as exc:
        return "cannot_start", PhaseResult(False, f"cannot prepare a worktree for the preflight: {exc}")
    finally:
        ctx.resources.release(LINK)
        await asyncio.to_thread(_release, ctx, link, branch)


def _prepare(ctx: RunContext, link: Path, branch: str, environment: Environment) -> Path:
    worktree = ctx.pool.acquire(link, branch, ctx.integration.tip)
    copy_included(ctx.user_repo, worktree, included_files(ctx.user_repo, environment))
    return worktree


async def _set_up(ctx: RunContext, check: Check, *, worktree: Path, log: Path, env: dict[str, str]) -> PhaseResult:
    """The environment's setup, stamped like a task's so the first task on this worktree skips it."""
    if not check.environment.setup:
        return PhaseResult(True)
    stamp = await asyncio.to_thread(setup_stamp, ctx, worktree, check.environment)
    if stamp.current:
        return PhaseResult(True, skipped=True)
    result = await run_phase(ctx, phase="setup", commands=check.environment.setup, task_id=LINK,
                             agent=check.task.agent, worktree=worktree, log_path=log, env=env,
                             timeout_s=check.environment.setup_timeout_s)
    stamp.save(result.passed)
    return result


def _release(ctx: RunContext, link: Path, branch: str) -> None:
    ctx.pool.release(link, max(ctx.width, 1))
    with contextlib.suppress(GitError):
        delete_ref(ctx.git, "refs/heads/" + branch)


def _missing_program(verify: tuple[str, ...], worktree: Path, path: str) -> str:
    """Why the verify's program cannot be found ("" when it can): a path is taken in the worktree, a name on PATH."""
    program = verify[0]
    if "/" in program:
        where = Path(program) if os.path.isabs(program) else worktree / program
        if where.is_file() and os.access(where, os.X_OK):
            return ""
        return f"verify `{shlex.join(verify)}`: {program} does not exist (or is not executable) in the worktree"
    if shutil.which(program, path=path):
        return ""
    return f"verify `{shlex.join(verify)}`: {program} is not on PATH"


def verdict_of(verify: tuple[str, ...], result: PhaseResult) -> str:
    """passed, red (the tests ran and failed) or cannot_start (they could not run: pytest's exit codes 2-5, a
    Python that could not open its script or find a module, a program not found or not executable)."""
    if result.passed:
        return "passed"
    if not result.started or result.exit_code in SHELL_CANNOT_RUN:
        return "cannot_start"
    words = [Path(arg).name for arg in verify[:3]]
    if words[0].startswith("python") and (result.exit_code == 2 or "No module named" in result.detail):
        return "cannot_start"  # it could not open its script, or `-m` found no such module (no pytest installed)
    if "pytest" in words or "py.test" in words:
        return "cannot_start" if result.exit_code in PYTEST_CANNOT_RUN else "red"
    return "red"

