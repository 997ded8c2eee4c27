"""Helpers the commands share: the repository directory, loading a plan, choosing the progress output."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from orchard.vcs import find_repo

if TYPE_CHECKING:  # the engine and the plan loader are imported when a command needs them: a quick `status`
    from orchard.core.journal import Observer
    from orchard.core.model import Plan


def repo_dir(ctx: click.Context) -> Path:
    """The `-C` directory, or the current one."""
    directory = ctx.find_root().obj
    return Path(directory) if directory else Path.cwd()


def load_plan(ctx: click.Context, path: Path) -> Plan:
    """Load and validate a plan; prompt files must lie inside the repository (if there is one)."""
    from orchard import plan as plan_loader

    try:
        root: Path | None = find_repo(repo_dir(ctx)).root
    except Exception:
        root = None
    return plan_loader.load(path, root)


def stdout_console() -> Console:
    """Standard output; strings print as they are (paths, agent output and errors may contain `[...]`)."""
    return Console(highlight=False, soft_wrap=True, markup=False)


@contextlib.contextmanager
def progress_output(json_mode: bool) -> Iterator[list[Observer]]:
    """NDJSON with --json; the live dashboard on a terminal; plain timestamped lines otherwise."""
    from orchard.ui.dashboard import Dashboard
    from orchard.ui.lines import NdjsonLines, PlainLines

    if json_mode:
        yield [NdjsonLines(sys.stdout)]
    elif sys.stdout.isatty():
        with Dashboard(stdout_console()) as dashboard:
            yield [dashboard]
    else:
        yield [PlainLines(sys.stdout)]
