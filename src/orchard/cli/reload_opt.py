"""`--reload` of `orchard resume` and `retry`: the run's plan file as it is now, compared with (or, with the flag,
set over) the snapshot the run started from (`core.plan_diff`, `plan.extend.FileReloader`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchard.cli.common import load_plan, repo_dir
from orchard.errors import PlanError, UsageError

if TYPE_CHECKING:
    from orchard.plan.extend import FileReloader

reload_option = click.option(
    "--reload", "reload_plan", is_flag=True,
    help="Take the plan file's changes since the run started for the tasks that have not merged (new tasks added, "
         "removed ones cancelled); without it they are only said.")


def reloader(ctx: click.Context, run_id: str | None, *, apply: bool) -> FileReloader | None:
    """The run's plan file, loaded now, as the session's reloader; None when there is no file to compare (a plan
    given in code, a file since removed). With `apply`, a file that is gone or does not load is an error (exit 2
    naming the problems); without, a plan that does not load is said and the run goes on with its snapshot."""
    from orchard.plan.extend import FileReloader

    path = _plan_file(ctx, run_id)
    if path is None:
        if apply:
            raise UsageError("--reload: the run's plan file is not there any more")
        return None
    try:
        return FileReloader(load_plan(ctx, path), apply)
    except PlanError as exc:
        if apply:
            raise
        click.echo(f"warning: {path} no longer loads, so its changes are not compared ({len(exc.problems)} "
                   "problem(s); `orchard plan` lists them); the run goes on with the plan it started with", err=True)
        return None


def _plan_file(ctx: click.Context, run_id: str | None) -> Path | None:
    """Where the run's plan was read from (relative to where it was started, else the repository's root)."""
    from orchard.cli.inspect_cmds import open_store

    layout, store = open_store(ctx)
    try:
        source = store.run(run_id).plan_source
    finally:
        store.close()
    if not source or source.startswith("<"):
        return None
    path = Path(source)
    found = [p for p in ((path,) if path.is_absolute() else (repo_dir(ctx) / path, layout.root.parent / path))
             if p.exists()]
    return found[0] if found else None
