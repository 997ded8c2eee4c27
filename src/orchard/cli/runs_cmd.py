"""`orchard runs`: the repository's runs, newest first: id, when it started, status, tasks merged of all, cost."""

from __future__ import annotations

import json

import click

from orchard.cli.common import stdout_console
from orchard.cli.inspect_cmds import open_store
from orchard.core.safe_text import safe_line
from orchard.ui.report import run_rows


@click.command("runs")
@click.option("--json", "json_mode", is_flag=True, help="One JSON object with the runs.")
@click.pass_context
def runs_cmd(ctx: click.Context, json_mode: bool) -> int:
    """List the repository's runs, newest first: id, started, status, tasks merged of all, cost."""
    _, store = open_store(ctx)
    try:
        rows = run_rows(store)
    finally:
        store.close()
    if json_mode:
        click.echo(json.dumps({"runs": rows}, indent=2))
        return 0
    out = stdout_console()
    for row in rows:
        started = str(row["started_at"])[:19].replace("T", " ")
        out.print(safe_line(f"{row['id']}  {started}  {row['status']:<16} "
                            f"merged {row['merged']}/{row['tasks']}  ${row['cost_usd']:.2f}"), soft_wrap=True)
    return 0
