"""`orchard analyze`: which files each task of a plan will touch, which tasks are coupled, and the fixes (no model
calls; `orchard.analysis`). Advice: exit 0 with risks, unless `--strict` (exit 1)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.text import Text

from orchard.cli.common import load_plan, repo_dir, stdout_console
from orchard.vcs import find_repo

RISKS_EXIT = 1  # --strict: the plan has risks
# `orchard.analysis.DEFAULT_HISTORY`, written out: every command loads this module, the analysis only this one
# (tests/test_analyze.py checks the two agree)
DEFAULT_HISTORY = 200


@click.command("analyze")
@click.argument("plan_path", metavar="PLAN", type=click.Path(path_type=Path))
@click.option("--json", "json_mode", is_flag=True, help="Print the analysis as JSON (sorted keys).")
@click.option("--write", "write_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the plan with the inferred files and suggested depends_on as comments to FILE (YAML plans).")
@click.option("--history", type=click.IntRange(min=0, max=100_000), default=DEFAULT_HISTORY, show_default=True,
              help="Commits of history read for co-change (0: none).")
@click.option("--base", help="Analyse against this ref (default: the plan's base, else HEAD).")
@click.option("--strict", is_flag=True, help=f"Exit {RISKS_EXIT} when the plan has risks.")
@click.pass_context
def analyze_cmd(ctx: click.Context, plan_path: Path, json_mode: bool, write_path: Path | None, history: int,
                base: str | None, strict: bool) -> int:
    """Infer the files each task of PLAN touches and rank the risks of tasks that may conflict."""
    from orchard import plan as plan_loader
    from orchard.analysis import analyze
    from orchard.analysis.report import as_data, text_lines
    from orchard.analysis.write import write_annotated

    root = find_repo(repo_dir(ctx)).root  # the tree and history analysed: outside a repository, exit 3
    plan = load_plan(ctx, plan_path)
    analysis = analyze(plan, root, base=base, history=history)
    written = None
    if write_path is not None:
        written = write_annotated(plan, plan_path, write_path, analysis,
                                  load_again=lambda path: plan_loader.load(path, root))
    if json_mode:
        click.echo(json.dumps(as_data(analysis), indent=2, sort_keys=True))
    else:
        out = stdout_console()
        at = analysis.base[:12] if analysis.base else "no commit yet"
        scanned = analysis.history_scanned
        out.print(Text.assemble((plan.source, "bold"), f": {len(plan.tasks)} tasks, base {at}, {scanned} "
                                f"commit{'s' if scanned != 1 else ''} of history"))
        for line in text_lines(analysis):
            out.print(line, soft_wrap=True)
        if written is not None:
            out.print(f"wrote {write_path}: {written} suggestion{'s' if written != 1 else ''} as comments",
                      soft_wrap=True)
    return RISKS_EXIT if strict and analysis.risks else 0
