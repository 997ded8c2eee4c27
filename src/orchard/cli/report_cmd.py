"""`orchard report [RUN]`: a run as a report: its figures, each task's attempts split into phases, a timeline,
concurrency, cost; on the terminal, as JSON, or as one self-contained HTML file (`ui.run_report`,
`ui.html_report`). `orchard run` writes the HTML one to `.orchard/runs/<run>/report.html` at its end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from orchard.cli.common import stdout_console
from orchard.cli.inspect_cmds import as_of, open_store
from orchard.errors import UsageError
from orchard.runtime.layout import Layout
from orchard.store import Store

REPORT_FILE = "report.html"


@click.command("report")
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the report as one self-contained HTML file (opens offline).")
@click.option("--json", "json_mode", is_flag=True, help="Print the report document as JSON.")
@click.pass_context
def report_cmd(ctx: click.Context, run_id: str | None, html_path: Path | None, json_mode: bool) -> int:
    """Report on a run (default: the latest): figures, tasks and their phases, a timeline, concurrency, cost."""
    from orchard.ui.html_report import report_html
    from orchard.ui.run_report import report_text

    layout, store = open_store(ctx)
    try:
        doc = build_report(layout, store, store.run(run_id).id)
    finally:
        store.close()
    if html_path is not None:
        _write(html_path, report_html(doc))
        click.echo(f"report: {html_path}")
    if json_mode:
        click.echo(json.dumps(doc, indent=2, default=str))
    elif html_path is None:
        stdout_console().print(report_text(doc))
    return 0


def build_report(layout: Layout, store: Store, run_id: str) -> dict[str, Any]:
    """The report document of a run, with its tasks' changes and log tails."""
    from orchard.cli.manage_cmds import own_repository
    from orchard.runtime.report_inputs import log_tails, task_files
    from orchard.ui.run_report import report_document

    git = own_repository(layout).repo
    return report_document(store, run_id, now=as_of(layout, store, run_id), files=task_files(git, store, run_id),
                           logs=log_tails(store, run_id))


def write_run_report(layout: Layout, run_id: str) -> Path:
    """`.orchard/runs/<run>/report.html`, written anew (what `orchard run` does as it ends)."""
    from orchard.ui.html_report import report_html

    store = Store(layout.state_db)
    try:
        doc = build_report(layout, store, run_id)
    finally:
        store.close()
    path = layout.run_dir(run_id) / REPORT_FILE
    _write(path, report_html(doc))
    return path


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{time.monotonic_ns()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
