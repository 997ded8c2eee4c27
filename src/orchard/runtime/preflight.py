"""Before any agent starts (the plan's `preflight`): each distinct verify command runs once on the untouched base, in
a pooled worktree set up as a task's would be. A verify that cannot even run there (its program missing, its tests
not importable, nothing collected) or a setup that fails stops the run with exit 3 and the output, nothing spent on
agents; a verify that fails on the base is remembered (`runs.baseline_red`), so the tasks' failures of it say they
were red before their agent instead of blaming it. The worktree is parked set up: the first task skips its setup.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from orchard.core.events import PreflightChecked
from orchard.core.model import Environment, Plan, RunStatus, Task
from orchard.errors import EnvironmentProblem
from orchard.runtime.checkrun import CheckRun, run_check
from orchard.runtime.context import RunContext
from orchard.runtime.environment import PhaseResult

PREFLIGHT_REASON = "preflight:"  # how the reason of a run its preflight stopped begins
LINK = ".preflight"  # the preflight's hold on a pooled worktree, beside the tasks' links: no task id starts with "."
PYTEST_CANNOT_RUN = frozenset({2, 3, 4, 5})  # interrupted (collection errors), internal error, usage, no tests
SHELL_CANNOT_RUN = frozenset({126, 127})  # not executable, not found


class PreflightFailed(EnvironmentProblem):
    """A verify command cannot run on the base, or the environment's setup fails there: no agent would do better."""


@dataclass(frozen=True)
class Check:
    """One distinct verify command and the environment it runs in; `task` is the first task that has it. `gate`:
    it is (also) the plan's `integration_verify`, which must pass on the base, or no candidate ever could."""

    verify: tuple[str, ...]
    task: Task
    environment: Environment
    timeout_s: float
    gate: bool = False

    @property
    def command(self) -> str:
        return shlex.join(self.verify)


def checks(plan: Plan) -> list[Check]:
    """The distinct (verify, environment, variables passed) of the plan's tasks, in plan order, then the gate's;
    none when the plan's `preflight` does not ask to run them."""
    if plan.preflight in ("off", "check"):
        return []
    found: dict[object, Check] = {}
    for task in plan.tasks:
        if task.verify:
            environment = plan.environment_of(task.id)
            found.setdefault((task.verify, environment, task.verify_env_pass),
                             Check(task.verify, task, environment, task.timeout_s))
    if plan.gate is not None and plan.tasks:
        first = plan.tasks[0]
        key = (plan.gate.verify, plan.environment, first.verify_env_pass)
        same = found.get(key)
        found[key] = (replace(same, gate=True, timeout_s=max(same.timeout_s, plan.gate.timeout_s)) if same else
                      Check(plan.gate.verify, first, plan.environment, plan.gate.timeout_s, gate=True))
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
        if ctx.processes.stopping:
            return  # interrupted: the engine ends the run as interrupted (and the resume checks again)
        if outcome == "red" and check.gate:
            outcome, result = "cannot_start", replace(result, detail=(
                f"integration_verify `{check.command}` fails on the base, before any agent changed anything, so no "
                f"candidate could pass the gate:\n{result.detail}"))
        if outcome == "red":
            ctx.journal.noted(f"verify `{check.command}` fails on the base, before any agent changed anything; its "
                              f"failures in tasks will say so (baseline_red):\n{result.detail}", level="warning")
        ctx.journal.preflight_checked(check.command, outcome=outcome, duration_s=result.duration_s,
                                      detail=result.detail)
        if outcome == "cannot_start":
            reason = f"{PREFLIGHT_REASON} {result.detail}"
            ctx.journal.run_finished(RunStatus.FAILED, reason=reason)
            raise PreflightFailed(f"{reason}\nNo agent was started. Fix the plan's verify or environment (or set "
                                  f"`preflight: off` to skip this check) and run again.")


async def _check(ctx: RunContext, check: Check, number: int) -> tuple[str, PhaseResult]:
    """Set a pooled worktree at the base up like the task's, run the verify there; the verdict and what happened."""
    log = ctx.layout.run_dir(ctx.run_id) / "logs" / f"{LINK}.{number}.log"
    run = CheckRun(link=LINK, branch=f"orchard/{ctx.run_id}/preflight", commit=ctx.integration.tip,
                   environment=check.environment, task=check.task, command=check.verify, timeout_s=check.timeout_s,
                   log=log)
    path = ctx.environ.get("PATH", os.defpath)
    outcome = await run_check(ctx, run, precheck=lambda worktree: _missing_program(check.verify, worktree, path))
    if outcome.stage != "command":
        return "cannot_start", outcome.result
    return verdict_of(check.verify, outcome.result), outcome.result


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

