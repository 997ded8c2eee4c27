"""Dry runs (`orchard run --dry-run`): a whole run with every agent replaced by a no-op that makes an empty change,
to watch a plan's waves, its ordering and the timing of its git work without calling any model.

`dry_run_plan` turns a plan into its dry run: every agent entry becomes kind `noop` (orchard's own; no plan file
may name it, `orchard.plan` accepts only the kinds of `AGENT_KIND_OPTIONS`). An attempt on a noop agent starts no
process (`runtime.attempt`): `empty_change` commits the start commit's tree again on the task branch. Everything
else is a real run's: worktrees from the pool, the leftovers check, a merge commit per task on the integration
branch, that branch published in the user's repository. `remove_run` takes all of the run away afterwards; its
records are kept in memory by the callers (`orchard.run(dry_run=True)`, `orchard run --dry-run`).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from orchard.agents import AttemptReport
from orchard.core.journal import AgentExit
from orchard.core.model import AgentSpec, Environment, Outcome, Plan
from orchard.errors import GitError, UsageError
from orchard.runtime.cleanup import clean_run
from orchard.runtime.layout import Layout
from orchard.runtime.process import append_log
from orchard.vcs import Repo, delete_ref, list_branches, set_ref
from orchard.vcs.merge import commit_tree
from orchard.vcs.private import OwnRepository, ref_values

if TYPE_CHECKING:
    pass

NOOP = "noop"
DRY_RUN_NOTE = ("dry run: no agent runs (each task commits an empty change), no setup, verify or gate; the run's "
                "branches are removed at the end and nothing is recorded in .orchard/state.db")
_KEPT_OPTIONS = frozenset({"fallback"})  # what a noop entry keeps of its agent's: which agent takes a task


def dry_run_plan(plan: Plan) -> Plan:
    """`plan` as its dry run: the same tasks, dependencies, tracks, files, priorities, limits and `parallel`, on
    noop agents of the same names and `max_parallel`; no verify, gate or preflight; environments without setup or
    teardown (`include` files are still copied into the worktrees); nothing to confine (no process runs) and no
    `compat` files written in the user's checkout, and no `notify` (a rehearsal tells nobody)."""
    agents = {name: AgentSpec(name, NOOP, spec.max_parallel,
                              MappingProxyType({k: v for k, v in spec.options.items() if k in _KEPT_OPTIONS}))
              for name, spec in plan.agents.items()}
    tasks = tuple(replace(t, verify=None, environment=t.environment and _no_commands(t.environment))
                  for t in plan.tasks)
    return replace(plan, tasks=tasks, agents=MappingProxyType(agents), environment=_no_commands(plan.environment),
                   gate=None, preflight="off", sandbox="none", compat="none", notify=(),
                   _index=MappingProxyType({t.id: t for t in tasks}))


def _no_commands(environment: Environment) -> Environment:
    """The environment without the commands it runs (setup, teardown); what it copies, keeps and sets stays."""
    return replace(environment, setup=(), setup_inputs=(), teardown=())


def check_dry_run(*, land: bool, records_given: bool) -> None:
    """Refuse what a dry run cannot do: land (its integration branch goes), or write the repository's records (the
    session's default when no records are given)."""
    if land:
        raise UsageError("a dry run cannot land: its integration branch is removed at the end")
    if not records_given:
        raise UsageError("a dry run keeps its records in memory: give it records (orchard.testing.MemoryStore)")


async def empty_change(repo: Repo, *, task_id: str, number: int, agent: str, log_path: Path, branch: str,
                       start: str, exited: Callable[[AgentExit], None]) -> AttemptReport:
    """A noop agent's attempt: no process; one commit on the task branch with the start commit's tree, so the
    result merges like any other; told (`exited`) as an agent that exited at once, spending nothing."""
    started = time.monotonic()
    append_log(log_path, f"[orchard: dry run: attempt {number} on {agent}: no agent runs, an empty commit]\n")
    message = f"orchard: task {task_id} (attempt {number})\n\nA dry run: no agent ran, nothing changed.\n"
    try:
        await asyncio.to_thread(_commit_again, repo, "refs/heads/" + branch, start, message)
        report = AttemptReport(Outcome.SUCCESS, "dry run: an empty change")
    except GitError as exc:
        report = AttemptReport(Outcome.SETUP_FAILED, f"dry run: cannot commit the empty change: {exc}")
    exited(AgentExit(exit_code=0 if report.outcome is Outcome.SUCCESS else None, signal=None,
                     duration_s=time.monotonic() - started))
    return report


def _commit_again(repo: Repo, ref: str, start: str, message: str) -> None:
    commit = commit_tree(repo, f"{start}^{{tree}}", (start,), message)
    if not set_ref(repo, ref, commit, start, "orchard: dry run"):
        raise GitError(["update-ref", ref], 1, "the task branch moved away from the attempt's start")


def remove_run(own: OwnRepository, layout: Layout, run_id: str) -> None:
    """Remove everything of a run: what `orchard clean --branches` removes, its logs and prompts, and every other
    branch it made in orchard's repository (its gate's and preflight's). Worktrees parked in the pool stay for the
    next run, as after any run. A branch the user has checked out is not deleted: a GitError says so, raised once
    the rest is gone."""
    clean_run(own, layout, run_id, integration=True)
    shutil.rmtree(layout.run_dir(run_id), ignore_errors=True)
    for ref in ref_values(own.repo, f"refs/heads/orchard/{run_id}/"):
        delete_ref(own.repo, ref)
    left = list_branches(own.user, f"orchard/{run_id}")
    if left:
        raise GitError(["branch", "-D", "--", *left], 1, "checked out in a worktree of yours, so not deleted")
