"""`orchard plan`: validate a plan and preview it: waves, critical path, estimated makespan, file overlaps."""

from __future__ import annotations

import json
from collections.abc import Mapping
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
@click.option("--parallel", "-j", type=click.IntRange(min=1, max=2**62), help="Tasks at once (default: the plan's).")
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
    for line in text_lines(data):
        out.print(line, soft_wrap=True)
    return 0


# A plan of a few dozen tasks prints whole; a 10,000-task plan prints ~200 lines instead of 11,000 overlap pairs
# nobody reads (rich's per-line cost made those 1.4 s). Cut lists say how much they left out; --json has it all.
WAVE_IDS_SHOWN = 50
LINES_SHOWN = 100


def text_lines(data: Mapping[str, Any]) -> list[str]:
    """The human preview after its title line: waves, critical path, makespan, file overlaps."""
    waves: list[list[str]] = data["waves"]
    lines = [f"  wave {i + 1}: {_ids(wave)}" for i, wave in enumerate(waves[:LINES_SHOWN])]
    if len(waves) > LINES_SHOWN:
        hidden = waves[LINES_SHOWN:]
        lines.append(f"  … and {len(hidden)} more waves ({sum(map(len, hidden))} tasks); --json lists them all")
    cp = data["critical_path"]
    lines.append(f"critical path: {' → '.join(cp['tasks'])} ({format_duration(cp['length_s'])})")
    lines.append(f"estimated makespan at parallel {data['parallel']}: {format_duration(data['estimated_makespan_s'])}"
                 f" (sequential {format_duration(data['sequential_s'])}, speedup {data['estimated_speedup']}x)")
    overlaps: list[list[str]] = data["file_overlaps"]
    if not overlaps:
        return [*lines, "no declared file overlaps"]
    lines.append("tasks with overlapping declared files (never run together):")
    lines += [f"  {a} ↔ {b}" for a, b in overlaps[:LINES_SHOWN]]
    if len(overlaps) > LINES_SHOWN:
        more = len(overlaps) - LINES_SHOWN
        lines.append(f"  … and {more} more pairs ({len(overlaps)} in all); --json lists them all")
    return lines


def _ids(wave: list[str]) -> str:
    """A wave's task ids, the first WAVE_IDS_SHOWN of a longer wave followed by how many more there are."""
    if len(wave) <= WAVE_IDS_SHOWN:
        return ", ".join(wave)
    return f"{', '.join(wave[:WAVE_IDS_SHOWN])} … and {len(wave) - WAVE_IDS_SHOWN} more ({len(wave)} tasks)"
