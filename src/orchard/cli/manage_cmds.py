"""`orchard clean` and `land`: remove what a run left behind, bring its results home."""

from __future__ import annotations

import shlex

import click

from orchard.cli.common import stdout_console
from orchard.cli.inspect_cmds import open_store
from orchard.core.gate_state import ungated_tip_problem
from orchard.core.landing import partial_note, refusal
from orchard.core.model import RunStatus
from orchard.errors import NotAllMerged, UngatedTip, UsageError
from orchard.runtime.cleanup import clean_run
from orchard.runtime.layout import Layout
from orchard.runtime.lock import live_holder
from orchard.runtime.pool import WorktreePool
from orchard.vcs import (
    branch_exists,
    branch_ref,
    find_repo,
    land,
)
from orchard.vcs.private import OwnRepository, open_own_repository, publish

# Runs no session will continue by itself: `resume` is for interrupted ones (and `retry` brings a finished one back)
FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.BUDGET_EXHAUSTED, RunStatus.CANCELLED})


def own_repository(layout: Layout) -> OwnRepository:
    """orchard's repository beside the user's one whose `.orchard/` is `layout` (found from any worktree)."""
    return open_own_repository(find_repo(layout.root.parent), layout.git_dir)


@click.command("clean")
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--all", "all_runs", is_flag=True, help="Clean every run that is not live.")
@click.option("--finished", is_flag=True,
              help="Clean every finished run (completed, failed, budget exhausted, cancelled), not only the latest.")
@click.option("--branches", is_flag=True, help="Also delete the integration branches (their results!).")
@click.pass_context
def clean_cmd(ctx: click.Context, /, run_id: str | None, *, all_runs: bool, finished: bool, branches: bool) -> int:
    """Remove the worktrees and task branches a run kept for inspection (default: the latest run); with --all also
    the reusable worktrees parked between runs."""
    if sum((bool(run_id), all_runs, finished)) > 1:
        raise UsageError("give one of RUN, --all and --finished")
    layout, store = open_store(ctx)
    own = own_repository(layout)
    try:
        runs = (store.runs() if all_runs else [r for r in store.runs() if r.status in FINISHED] if finished
                else [store.run(run_id)])
        holder = live_holder(layout.lock_file) or {}
        out = stdout_console()
        for run in runs:
            if holder.get("run") == run.id:
                out.print(f"skipping live run {run.id}")
                continue
            removed = clean_run(own, layout, run.id, integration=branches)
            out.print(f"run {run.id}: removed {removed[0]} worktree(s), {removed[1]} branch(es)")
        if all_runs and not holder:  # a live run is using the reusable worktrees
            out.print(f"removed {WorktreePool(own.repo, layout).trim(0)} reusable worktree(s)")
    finally:
        store.close()
    return 0


@click.command("land")
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--partial", is_flag=True, help="Land a run some of whose tasks did not merge: what merged, only.")
@click.pass_context
def land_cmd(ctx: click.Context, run_id: str | None, partial: bool) -> int:
    """Merge a run's integration branch into its base branch (fast-forward when possible); a run some of whose
    tasks did not merge only with --partial."""
    layout, store = open_store(ctx)
    try:
        run = store.run(run_id)
        holder = live_holder(layout.lock_file) or {}
        if holder.get("run") == run.id:
            raise UsageError(f"run {run.id} is still live; land it when it has finished")
        tasks = store.tasks(run.id)
        refused = None if partial else refusal(run.id, tasks)
        if refused:
            raise NotAllMerged(refused)
        own = own_repository(layout)
        if not branch_exists(own.user, run.base):
            raise UsageError(f"run {run.id} started from '{run.base}', which is not a branch; "
                             f"merge {run.integration_branch} yourself")
        tip = run.integration_tip or run.base_commit
        gate = store.plan(run.id).gate
        problem = gate and ungated_tip_problem((data for _, data in store.events(run.id)), tip=tip,
                                               base=run.base_commit, command=shlex.join(gate.verify))
        if problem:
            raise UngatedTip(f"cannot land run {run.id}: {problem}")
        # orchard's record is what merged: a session that died before publishing it leaves the user's copy behind
        publish(own, {branch_ref(run.integration_branch): tip})
        result = land(own.user, run.integration_branch, run.base, marker=layout.land_marker)
        out = stdout_console()
        out.print(f"landed {run.integration_branch} on {run.base}: {result}")
        if note := partial_note(tasks):
            out.print(note)
    finally:
        store.close()
    return 0

