"""`orchard web`: the live dashboard in a browser (`orchard.web`), bound to 127.0.0.1 by default; any other
address gets a token, printed once at start and demanded on every request."""

from __future__ import annotations

import click

from orchard.cli.common import repo_dir
from orchard.cli.inspect_cmds import open_store
from orchard.errors import NotRecorded
from orchard.runtime.layout import Layout
from orchard.vcs import find_repo


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback requires the token printed at start.")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8765, show_default=True,
              help="Port to listen on (0: any free one).")
@click.option("--allow-actions", is_flag=True,
              help="Add cancel and retry buttons (they do what `orchard cancel TASK` and `orchard retry TASK` do).")
@click.pass_context
def web_cmd(ctx: click.Context, host: str, port: int, allow_actions: bool) -> int:
    """Serve the live dashboard: the repository's runs, the current run's tasks, each task's log and diff."""
    from orchard.web.app import Site
    from orchard.web.serve import bind, is_loopback, new_token, serve

    try:
        layout, store = open_store(ctx)
        store.close()
    except NotRecorded:  # nothing ran here yet: the page waits for the first run
        layout = Layout.for_repo(find_repo(repo_dir(ctx).resolve()).root)
    token = None if is_loopback(host) else new_token()
    sock = bind(host, port)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
    click.echo(f"orchard web: serving {url}", err=False)
    if token:
        click.echo("orchard web: every request needs that token (it is not stored anywhere)")
    if allow_actions:
        click.echo("orchard web: actions allowed: the page can cancel and retry tasks")
    serve(Site(layout, token, actions=allow_actions, csrf=new_token()), sock)
    return 0
