"""`orchard status`, `orchard show` and `orchard logs`: read-only views of the state store and the attempt logs.

Logs hold what agents printed, escape sequences included: `logs` shows them made visible (`core.safe_text`),
`logs --raw` writes the bytes as they were recorded (secrets were redacted before they reached the file)."""

from __future__ import annotations

import codecs
import json
import sys
import time
from pathlib import Path

import click

from orchard.cli.common import repo_dir, stdout_console
from orchard.core.eta import run_eta
from orchard.core.safe_text import safe_text
from orchard.core.summary import summarize
from orchard.errors import NotRecorded, OrchardError, UsageError
from orchard.runtime.layout import Layout
from orchard.runtime.lock import live_holder
from orchard.store import Store
from orchard.ui.report import last_seen, status_document, status_table, summary_text
from orchard.vcs import find_repo, list_branches


def open_store(ctx: click.Context) -> tuple[Layout, Store]:
    """The store of the repository containing the working directory; a clear error if nothing ran here."""
    repo = find_repo(repo_dir(ctx).resolve())
    layout = Layout.for_repo(repo.root)
    if not layout.state_db.exists():
        # In a task worktree kept for inspection (orchard's repository is `<checkout>/.orchard/git`), or in a linked
        # worktree of the user's repository: the main checkout's runs.
        git_dir = repo.git_dir.resolve()
        own = git_dir.name == "git" and git_dir.parent.name == ".orchard"
        main = Layout(git_dir.parent) if own else Layout.for_repo(git_dir.parent)
        if not (own or git_dir.name == ".git") or not main.state_db.exists():
            raise NotRecorded(f"no orchard runs in {repo.root} yet (start one with `orchard run PLAN`)")
        layout = main
    return layout, Store(layout.state_db)


@click.command("status")
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--json", "json_mode", is_flag=True, help="Print the stable JSON status document.")
@click.pass_context
def status_cmd(ctx: click.Context, run_id: str | None, json_mode: bool) -> int:
    """Show a run's tasks (default: the latest run)."""
    layout, store = open_store(ctx)
    try:
        run = store.run(run_id)
        now = as_of(layout, store, run.id)
        live = (live_holder(layout.lock_file) or {}).get("run") == run.id
        doc = status_document(store, run.id, branches=_branches(layout, run.id), now=now,
                              eta=run_eta(store, run.id, now=now) if live else None)
        if json_mode:
            click.echo(json.dumps(doc, indent=2))
            return 0
        out = stdout_console()
        out.print(status_table(doc))
        out.print(summary_text(summarize(store, run.id, now)))
    finally:
        store.close()
    return 0


def as_of(layout: Layout, store: Store, run_id: str) -> float:
    """The time a run's figures are taken at: now while a session runs it, else its last sign of life (a session
    that died left attempts open: they must not grow with the clock)."""
    if (live_holder(layout.lock_file) or {}).get("run") == run_id:
        return time.time()
    return last_seen(store, run_id) or time.time()


def _branches(layout: Layout, run_id: str) -> set[str] | None:
    """The run's branches that exist in orchard's repository (a merged task's may have been deleted); None when
    that repository cannot be read (`status` still shows the rest)."""
    from orchard.cli.manage_cmds import own_repository

    try:
        return set(list_branches(own_repository(layout).repo, f"orchard/{run_id}"))
    except OrchardError:
        return None


@click.command("logs")
@click.argument("task_id", metavar="TASK")
@click.option("--run", "run_id", help="The run (default: the latest).")
@click.option("--attempt", type=click.IntRange(min=1, max=2**62), help="Only this attempt (default: all).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing the latest attempt's log as it grows.")
@click.option("--raw", is_flag=True, help="The log's bytes exactly as recorded, escape sequences and all.")
@click.pass_context
def logs_cmd(ctx: click.Context, task_id: str, run_id: str | None, attempt: int | None, follow: bool,
             raw: bool) -> int:
    """Print a task's agent and verify output, attempt by attempt (control characters shown as `\\x1b` and the
    like unless --raw)."""
    if follow and attempt is not None:
        raise UsageError("--follow always shows the latest attempt; give --attempt or --follow, not both")
    layout, store = open_store(ctx)
    try:
        run = store.run(run_id)
        store.task(run.id, task_id)
        attempts = [a for a in store.attempts(run.id, task_id) if attempt is None or a.number == attempt]
        if not attempts and not follow:
            which = f"no attempt {attempt}" if attempt is not None else "no attempts yet"
            raise UsageError(f"task '{task_id}' of run {run.id} has {which}")
        for a in attempts[:-1] if follow else attempts:
            _print_log(a.number, Path(a.log_path), raw=raw)
        if follow:
            _follow(layout, store, run.id, task_id, raw=raw)
    finally:
        store.close()
    return 0


class LogOutput:
    """One log to standard output: the bytes as they are with `raw`, else decoded as UTF-8 (a byte that is not
    shown as `\\xNN`) with every control character but tab and newline made visible."""

    CHUNK = 1 << 20

    def __init__(self, *, raw: bool) -> None:
        self.raw = raw
        # incremental: a character split between two reads of a growing log is decoded whole
        self.decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")

    def write(self, data: bytes, *, final: bool = False) -> None:
        out = data if self.raw else safe_text(self.decoder.decode(data, final)).encode()
        sys.stdout.buffer.write(out)
        sys.stdout.flush()

    def copy(self, path: Path, offset: int = 0) -> int:
        """Write `path` from `offset` on; the new offset."""
        with path.open("rb") as fh:
            fh.seek(offset)
            while chunk := fh.read(self.CHUNK):
                offset += len(chunk)
                self.write(chunk)
        return offset


def _print_log(number: int, path: Path, *, raw: bool) -> None:
    click.echo(f"── attempt {number} · {path}")
    if path.exists():
        out = LogOutput(raw=raw)
        out.copy(path)
        out.write(b"", final=True)


def _follow(layout: Layout, store: Store, run_id: str, task_id: str, *, raw: bool) -> None:
    """Stream the newest attempt's log until the task settles or the run is no longer live."""
    current, offset, out = 0, 0, LogOutput(raw=raw)
    while True:
        # Decide whether this is the last pass *before* reading, so output written just before the task
        # settled is still printed.
        status = store.task(run_id, task_id).status
        holder = live_holder(layout.lock_file) or {}
        settled = status.terminal or holder.get("run") != run_id
        attempts = store.attempts(run_id, task_id)
        if attempts and attempts[-1].number != current:
            out.write(b"", final=True)
            current, offset, out = attempts[-1].number, 0, LogOutput(raw=raw)
            click.echo(f"── attempt {current} · {attempts[-1].log_path}")
        if attempts:
            path = Path(attempts[-1].log_path)
            if path.exists():
                offset = out.copy(path, offset)
        if settled:
            out.write(b"", final=True)
            return
        time.sleep(0.3)
