"""`orchard diff TASK`: the task's change, as git shows it: its merged change (the merge commit against its first
parent), or for a task not merged, its branch against its latest attempt's start (`runtime.changes`).

The diff is an agent's work: its escape sequences are shown as `\\x1b…`, not sent to the terminal, unless --raw."""

from __future__ import annotations

import click

from orchard.cli.inspect_cmds import open_store
from orchard.cli.manage_cmds import own_repository
from orchard.core.safe_text import safe_text
from orchard.errors import NotRecorded
from orchard.runtime.changes import task_range
from orchard.vcs.lines import diff_text


@click.command("diff")
@click.argument("task_id", metavar="TASK")
@click.option("--run", "run_id", metavar="RUN", help="The run (default: the latest).")
@click.option("--stat", is_flag=True, help="Only the files changed and their lines added and removed.")
@click.option("--raw", is_flag=True, help="The diff's bytes as git prints them, escape sequences and all.")
@click.pass_context
def diff_cmd(ctx: click.Context, task_id: str, run_id: str | None, stat: bool, raw: bool) -> int:
    """Show a task's change: what it merged, or what its latest attempt made (its branch)."""
    layout, store = open_store(ctx)
    try:
        run = store.run(run_id)
        task = store.task(run.id, task_id)
        attempts = store.attempts(run.id, task_id)
    finally:
        store.close()
    git = own_repository(layout).repo
    found = task_range(git, task, attempts)
    if found is None:
        raise NotRecorded(f"task '{task_id}' of run {run.id} has no change to show yet ({task.status}, "
                          f"{task.attempts} attempt(s))")
    old, new = found
    click.echo(f"# {task_id} ({task.status}): {old[:12]}..{new[:12]}")
    if old == new:  # the attempt ended before orchard committed anything (its agent failed, or was stopped)
        kept = layout.worktree(run.id, task_id)
        where = f"; its worktree is kept: git -C {kept} status" if kept.exists() else ""
        click.echo(f"# nothing committed: the latest attempt ended {attempts[-1].outcome} before a commit{where}")
        return 0
    text = diff_text(git, old, new, stat=stat)
    # color=True: click would strip escape sequences off a pipe, and --raw means the bytes as git printed them
    click.echo(text if raw else safe_text(text), nl=False, color=True)
    return 0
