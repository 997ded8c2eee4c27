"""`orchard plan`: validate a plan and preview it: waves, critical path, estimated makespan, file overlaps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.text import Text

from orchard.cli.common import load_plan, stdout_console
from orchard.core.durations import format_duration

if TYPE_CHECKING:
    from orchard.core.model import Plan


def preview(plan: Plan, parallel: int) -> dict[str, Any]:
    """The plan preview as data (the `--json` output)."""
    from orchard.core.graph import critical_path, overlapping_pairs, waves
    from orchard.core.simulate import simulate

    cp = critical_path(plan)
    sim = simulate(plan, parallel)
    sequential = sum(t.estimate_s for t in plan.tasks)
    return {
        "source": plan.source,
        "tasks": len(plan.tasks),
        "parallel": parallel,
        "waves": waves(plan),
        "critical_path": {"tasks": list(cp.tasks), "length_s": cp.length_s},
        "estimated_makespan_s": sim.makespan_s,
        "sequential_s": sequential,
        "estimated_speedup": round(sequential / sim.makespan_s, 2) if sim.makespan_s else 0.0,
        "file_overlaps": [list(p) for p in overlapping_pairs(plan)],
    }


@click.command("plan")
@click.argument("plan_path", metavar="PLAN", type=click.Path(path_type=Path))
@click.option("--parallel", "-j", type=click.IntRange(min=1), help="Tasks at once (default: the plan's).")
@click.option("--json", "json_mode", is_flag=True, help="Print the preview as JSON.")
@click.pass_context
def plan_cmd(ctx: click.Context, plan_path: Path, parallel: int | None, json_mode: bool) -> int:
    """Validate PLAN and show its waves, critical path, estimated makespan and file overlaps."""
    plan = load_plan(ctx, plan_path)
    data = preview(plan, parallel or plan.parallel)
    if json_mode:
        click.echo(json.dumps(data, indent=2))
        return 0
    out = stdout_console()
    out.print(Text.assemble((plan.source, "bold"), f": {data['tasks']} tasks, valid"))
    for i, wave in enumerate(data["waves"]):
        out.print(f"  wave {i + 1}: {', '.join(wave)}", soft_wrap=True)
    cp = data["critical_path"]
    out.print(f"critical path: {' → '.join(cp['tasks'])} ({format_duration(cp['length_s'])})", soft_wrap=True)
    out.print(f"estimated makespan at parallel {data['parallel']}: {format_duration(data['estimated_makespan_s'])}"
              f" (sequential {format_duration(data['sequential_s'])}, speedup {data['estimated_speedup']}x)")
    if data["file_overlaps"]:
        out.print("tasks with overlapping declared files (never run together):")
        for a, b in data["file_overlaps"]:
            out.print(f"  {a} ↔ {b}")
    else:
        out.print("no declared file overlaps")
    return 0
