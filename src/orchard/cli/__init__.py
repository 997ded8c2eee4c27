"""Composition root: the `orchard` command. Errors are mapped to exit codes here, once.

Exit codes: 0 every task merged · 1 some task failed, conflicted or was blocked · 2 invalid input or usage ·
3 environment problem (not a git repository, old git, repository locked) · 130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from orchard.cli.add_cmd import add_cmd
from orchard.cli.analyze_cmd import analyze_cmd
from orchard.cli.control_cmds import agents_cmd, cancel_cmd, set_cmd
from orchard.cli.diff_cmd import diff_cmd
from orchard.cli.doctor_cmd import doctor_cmd
from orchard.cli.draft_cmd import draft_cmd
from orchard.cli.inspect_cmds import logs_cmd, status_cmd
from orchard.cli.manage_cmds import clean_cmd, land_cmd
from orchard.cli.plan_cmd import plan_cmd
from orchard.cli.report_cmd import report_cmd
from orchard.cli.run_cmds import demo_cmd, resume_cmd, retry_cmd, run_cmd
from orchard.cli.runs_cmd import runs_cmd
from orchard.cli.show_cmd import show_cmd
from orchard.cli.web_cmd import web_cmd
from orchard.core.safe_text import safe_text
from orchard.errors import OrchardError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-C", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Work on the repository containing DIR instead of the current directory.")
@click.version_option(package_name="orchard", prog_name="orchard")
@click.pass_context
def cli(ctx: click.Context, directory: Path | None) -> None:
    """Run many AI coding agents in parallel on one git repository."""
    ctx.obj = directory


for command in (plan_cmd, analyze_cmd, draft_cmd, run_cmd, resume_cmd, retry_cmd, add_cmd, runs_cmd, status_cmd,
                show_cmd, diff_cmd, report_cmd, logs_cmd, cancel_cmd, set_cmd, agents_cmd, clean_cmd, land_cmd,
                demo_cmd, doctor_cmd, web_cmd):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the command and exit with its code, never with a traceback."""
    err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
    if argv and any("\0" in arg for arg in argv):  # a shell cannot pass one, a library caller can
        err.print("orchard: an argument contains a NUL byte")
        sys.exit(2)
    try:
        code = cli.main(args=argv, prog_name="orchard", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        err.print("orchard: aborted")
        code = 130
    except click.ClickException as exc:
        exc.show()
        code = 2
    except OrchardError as exc:
        # text, never markup; safe: a message may quote git's or an agent's output (a path an agent created)
        err.print(Text.assemble(("orchard:", "bold red"), f" {safe_text(str(exc))}"))
        code = exc.exit_code
    except KeyboardInterrupt:
        err.print("orchard: interrupted")
        code = 130
    sys.exit(code if isinstance(code, int) else 0)
