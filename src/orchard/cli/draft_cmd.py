"""`orchard draft GOAL`: a configured agent writes a plan for GOAL (read-only, in a scratch worktree), orchard checks
it with the plan loader and sends the problems back, then writes the valid plan and shows `orchard plan`'s preview.
Nothing runs. Exit 1 when no valid plan came of it (nothing written), 2 for bad input (no agents, an unknown
--agent, an existing --out)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.text import Text

from orchard.cli.common import repo_dir, stdout_console
from orchard.core.safe_text import safe_line
from orchard.errors import OrchardError, UsageError
from orchard.vcs import find_repo

if TYPE_CHECKING:
    from orchard.core.model import Plan
    from orchard.planner import DraftResult

# `orchard.planner.session`'s defaults, written out: every command loads this module, the planner only this one
DEFAULT_DRAFTS = 3
DEFAULT_MAX_TASKS = 20
DEFAULT_TIMEOUT = "15m"


@click.command("draft")
@click.argument("goal")
@click.option("--agents", "agents_path", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file whose `agents:` mapping (plan format) the plan may use; an existing plan serves "
                   "(default: orchard.yaml at the repository root).")
@click.option("--agent", "agent_name", metavar="NAME", help="The agent that writes the plan (default: the only one).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where the plan goes (default: plan.yaml in the current directory); never overwritten without "
                   "--force.")
@click.option("--max-tasks", type=click.IntRange(min=1, max=10_000), default=DEFAULT_MAX_TASKS, show_default=True,
              help="The most tasks the plan may have.")
@click.option("--drafts", type=click.IntRange(min=1, max=10), default=DEFAULT_DRAFTS, show_default=True,
              help="Drafts in all: the first and the revisions asked for after problems.")
@click.option("--base", help="Plan against this ref (default: HEAD); the plan gets it as its `base`.")
@click.option("--timeout", default=DEFAULT_TIMEOUT, show_default=True, metavar="DURATION",
              help="Wall clock for each of the planner's turns.")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@click.option("--json", "json_mode", is_flag=True, help="Print the result and the preview as JSON.")
@click.pass_context
def draft_cmd(ctx: click.Context, /, *, goal: str, agents_path: Path | None, agent_name: str | None,
              out_path: Path | None, max_tasks: int, drafts: int, base: str | None, timeout: str, force: bool,
              json_mode: bool) -> int:
    """Have an agent write a plan for GOAL, check it, and write it when valid (nothing runs)."""
    from orchard.core.durations import parse_duration
    from orchard.planner import DraftRequest, agents_file, choose_planner, draft, read_agents_config

    if not goal.strip():
        raise UsageError("GOAL: say what the plan should achieve")
    try:
        timeout_s = parse_duration(timeout)
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from None
    repo = find_repo(repo_dir(ctx))
    config = read_agents_config(agents_file(agents_path, repo.root))
    request = DraftRequest(goal, repo, config, choose_planner(config, agent_name),
                           (out_path or repo_dir(ctx) / "plan.yaml").absolute(), max_tasks=max_tasks, drafts=drafts,
                           base=base, force=force, timeout_s=max(timeout_s, 1.0), on_progress=_progress())
    result = draft(request)
    data, risk_lines = _preview(result, repo.root)
    if json_mode:
        click.echo(json.dumps(data, indent=2))
    else:
        _print(result, data, risk_lines)
    return 0


def _progress() -> Callable[[str], None]:
    """What the planner does, one dim line each on standard error, made safe for a terminal."""
    err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

    def show(text: str) -> None:
        err.print(Text(f"planner: {safe_line(text)}", style="dim"))

    return show


def _preview(result: DraftResult, root: Path) -> tuple[dict[str, Any], list[str]]:
    """The draft's outcome and `orchard plan`'s preview of the written plan, with its warnings and the coupling
    risks `orchard analyze` finds (advice only: a valid plan does not depend on them)."""
    from orchard.cli.plan_cmd import preview
    from orchard.plan.worktreeinclude import include_lines
    from orchard.runtime.imports import import_traps

    plan = result.plan
    data = preview(plan, plan.parallel, [pattern for _, pattern in include_lines(root)])
    warnings = [*result.warnings, *(trap.message() for trap in import_traps(root, plan))]
    risks, lines = _risks(plan, root, result.path, warnings)
    data["warnings"] = warnings
    return {"path": str(result.path), "planner": result.planner, "drafts": result.drafts,
            "rejected": [list(p) for p in result.rejected], "cost_usd": round(result.cost_usd, 6),
            "tokens_in": result.tokens_in, "tokens_out": result.tokens_out, "preview": data, "risks": risks}, lines


def _risks(plan: Plan, root: Path, path: Path, warnings: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The coupling risks of the plan (`orchard analyze`'s `--json` shape) and a short section naming the first
    few, as `orchard plan` shows them; none, with a warning, when the analysis cannot run."""
    try:
        from orchard.analysis import analyze
        from orchard.analysis.report import RISKS_IN_PLAN, risk_data

        risks = [risk_data(r) for r in analyze(plan, root).risks]
    except (ImportError, OrchardError) as exc:
        warnings.append(f"no coupling analysis: {exc}")
        return [], []
    if not risks:
        return [], []
    lines = [f"warning: {len(risks)} pair{'s' if len(risks) != 1 else ''} of tasks may conflict (not ordered by "
             "the plan):"]
    lines += [safe_line(f"  {' ↔ '.join(r['tasks'])}: {r['evidence'][0]['text']}; fix: {r['suggestion']}")
              for r in risks[:RISKS_IN_PLAN]]
    lines.append(f"  run `orchard analyze {path}` for the evidence and fixes")
    return risks, lines


def _print(result: DraftResult, data: dict[str, Any], risk_lines: list[str]) -> None:
    from orchard.cli.plan_cmd import text_lines

    out = stdout_console()
    rejected = len(result.rejected)
    how = f"{result.drafts} draft{'s' if result.drafts != 1 else ''}" + (f", {rejected} sent back" if rejected else "")
    spent = f", ${result.cost_usd:.4f}" if result.cost_usd else ""
    out.print(Text.assemble("wrote ", (str(result.path), "bold"),
                            f": {data['preview']['tasks']} tasks, valid; drafted by {result.planner} ({how}{spent}); "
                            "nothing ran"))
    lines = text_lines(data["preview"]) + [f"warning: {w}" for w in data["preview"]["warnings"]] + risk_lines
    for line in lines:
        out.print(line, soft_wrap=True)
