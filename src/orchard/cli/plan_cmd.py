"""`orchard plan`: validate a plan and preview it: waves, critical path, estimated makespan, file overlaps, and the
environment each task's worktree gets."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.text import Text

from orchard.cli.common import load_plan, repo_dir, stdout_console
from orchard.core.durations import format_duration
from orchard.core.model import NO_ENVIRONMENT, Environment
from orchard.core.safe_text import safe_line
from orchard.errors import OrchardError
from orchard.vcs import find_repo

if TYPE_CHECKING:
    from orchard.core.model import Plan


def preview(plan: Plan, parallel: int, worktreeinclude: Sequence[str] = ()) -> dict[str, Any]:
    """The plan preview as data (the `--json` output); `worktreeinclude`: the patterns of the repository's
    `.worktreeinclude`."""
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
        "environment": environment_view(plan, worktreeinclude),
        "gate": None if plan.gate is None else asdict(plan.gate),
    }


def environment_view(plan: Plan, worktreeinclude: Sequence[str] = ()) -> dict[str, Any] | None:
    """What each task's worktree gets: the plan's environment, and under `tasks` those of the tasks whose own
    differs; None when neither the plan nor the repository gives worktrees anything."""
    tasks = {t.id: _environment_data(t.environment) for t in plan.tasks
             if t.environment is not None and t.environment != plan.environment}
    if plan.environment == NO_ENVIRONMENT and not tasks and not worktreeinclude:
        return None
    return {**_environment_data(plan.environment), "worktreeinclude": list(worktreeinclude), "tasks": tasks}


def _environment_data(env: Environment) -> dict[str, Any]:
    """One environment as JSON-able data: `env` by names only (its values may be secrets); `source` says where
    setup and teardown came from."""
    return {"include": list(env.include), "setup": [list(c) for c in env.setup],
            "teardown": [list(c) for c in env.teardown],
            "source": env.source or ("plan" if env.setup or env.teardown else None),
            "setup_inputs": list(env.setup_inputs), "cached": bool(env.setup and env.setup_inputs),
            "keep": list(env.keep), "ports": env.ports, "env": [name for name, _ in env.env],
            "setup_timeout_s": env.setup_timeout_s}


@click.command("plan")
@click.argument("plan_path", metavar="PLAN", type=click.Path(path_type=Path))
@click.option("--parallel", "-j", type=click.IntRange(min=1, max=2**62), help="Tasks at once (default: the plan's).")
@click.option("--json", "json_mode", is_flag=True, help="Print the preview as JSON.")
@click.pass_context
def plan_cmd(ctx: click.Context, plan_path: Path, parallel: int | None, json_mode: bool) -> int:
    """Validate PLAN and show its waves, critical path, estimated makespan and file overlaps."""
    plan = load_plan(ctx, plan_path)
    from orchard.plan.worktreeinclude import include_lines

    root = _repo_root(ctx)
    listed = [pattern for _, pattern in include_lines(root)] if root is not None else []
    warnings: list[str] = []
    plan, basis = _learned(root, plan, warnings)  # what `orchard run` would use: the makespan is estimated with it
    data = preview(plan, parallel or plan.parallel, listed)
    data["estimates"] = {t.id: {"estimate_s": t.estimate_s, "source": t.estimated, "basis": basis.get(t.id, "")}
                         for t in plan.tasks}
    from orchard.runtime.imports import import_traps, strict_refusal

    traps = import_traps(root, plan) if root is not None else []
    data["warnings"] = warnings + [trap.message() for trap in traps]
    coupling = _coupling(root, plan, data["warnings"])
    data["analysis"] = coupling
    if json_mode:
        click.echo(json.dumps(data, indent=2))
    else:
        out = stdout_console()
        out.print(Text.assemble((plan.source, "bold"), f": {data['tasks']} tasks, valid"))
        for line in text_lines(data) + [f"warning: {w}" for w in data["warnings"]] + _coupling_lines(
                coupling, str(plan_path)):
            out.print(line, soft_wrap=True)
    if traps and plan.preflight == "strict":
        raise strict_refusal(traps)
    return 0


def _learned(root: Path | None, plan: Plan, warnings: list[str]) -> tuple[Plan, dict[str, str]]:
    """The plan with the estimates the repository's history gives its tasks without one (`core.estimates`)."""
    from orchard.runtime.estimates import with_history
    from orchard.runtime.layout import Layout
    from orchard.store import Store

    db = Layout.for_repo(root).state_db if root is not None else None
    if db is None or not db.exists():
        return plan, {}
    try:
        store = Store(db)
    except OrchardError as exc:
        warnings.append(f"no estimates from history: {exc}")
        return plan, {}
    try:
        return with_history(plan, store)
    finally:
        store.close()


def _coupling(root: Path | None, plan: Plan, warnings: list[str]) -> dict[str, Any] | None:
    """`orchard analyze`'s risks as data (`analysis` of `--json`); None outside a repository, or with a warning
    when the analysis cannot run (a base that names nothing): the preview does not depend on it."""
    if root is None:
        return None
    from orchard.analysis import analyze
    from orchard.analysis.report import risk_data

    try:
        found = analyze(plan, root)
    except OrchardError as exc:
        warnings.append(f"no coupling analysis: {exc}")
        return None
    return {"base": found.base, "history_scanned": found.history_scanned,
            "risks": [risk_data(r) for r in found.risks]}


def _coupling_lines(coupling: Mapping[str, Any] | None, plan_arg: str) -> list[str]:
    """The short risk section: how many, the first few, where to see them all."""
    if not coupling or not coupling["risks"]:
        return []
    from orchard.analysis.report import RISKS_IN_PLAN

    risks: list[dict[str, Any]] = coupling["risks"]
    lines = [f"warning: {len(risks)} pair{'s' if len(risks) != 1 else ''} of tasks may conflict (not ordered by "
             "the plan):"]
    for risk in risks[:RISKS_IN_PLAN]:
        first, more = risk["evidence"][0]["text"], len(risk["evidence"]) - 1
        lines.append(safe_line(f"  {' ↔ '.join(risk['tasks'])}: {first}{f' (+{more} more)' if more else ''}; "
                               f"fix: {risk['suggestion']}"))
    lines.append(f"  run `orchard analyze {plan_arg}` for {'all of them' if len(risks) > 1 else 'the evidence'}")
    return lines


def _repo_root(ctx: click.Context) -> Path | None:
    """The root of the repository the command runs in, whose `.worktreeinclude` every worktree follows."""
    try:
        return find_repo(repo_dir(ctx)).root
    except OrchardError:
        return None


# A plan of a few dozen tasks prints whole; a 10,000-task plan prints ~200 lines instead of 11,000 overlap pairs
# nobody reads (rich's per-line cost made those 1.4 s). Cut lists say how much they left out; --json has it all.
WAVE_IDS_SHOWN = 50
LINES_SHOWN = 100


def text_lines(data: Mapping[str, Any]) -> list[str]:
    """The human preview after its title line: waves, critical path, makespan, file overlaps, environment."""
    gate = data.get("gate")
    gated = [f"gate: every result merges only in a candidate that passes `{shlex.join(gate['verify'])}` (up to "
             f"{gate['batch']} at once, each check within {format_duration(gate['timeout_s'])})"] if gate else []
    return _schedule_lines(data) + gated + environment_lines(data.get("environment"))


def _schedule_lines(data: Mapping[str, Any]) -> list[str]:
    waves: list[list[str]] = data["waves"]
    lines = [f"  wave {i + 1}: {_ids(wave)}" for i, wave in enumerate(waves[:LINES_SHOWN])]
    if len(waves) > LINES_SHOWN:
        hidden = waves[LINES_SHOWN:]
        lines.append(f"  … and {len(hidden)} more waves ({sum(map(len, hidden))} tasks); --json lists them all")
    cp = data["critical_path"]
    lines.append(f"critical path: {' → '.join(cp['tasks'])} ({format_duration(cp['length_s'])})")
    lines.append(f"estimated makespan at parallel {data['parallel']}: {format_duration(data['estimated_makespan_s'])}"
                 f" (sequential {format_duration(data['sequential_s'])}, speedup {data['estimated_speedup']}x)")
    learned = [(t, e) for t, e in data.get("estimates", {}).items() if e["source"] == "history"]
    if learned:
        lines.append(f"estimates from history ({len(learned)} task{'s' if len(learned) != 1 else ''}):")
        lines += [f"  {t}: {format_duration(e['estimate_s'])}, {e['basis']}" for t, e in learned[:LINES_SHOWN]]
        if len(learned) > LINES_SHOWN:
            lines.append(f"  … and {len(learned) - LINES_SHOWN} more; --json lists them all")
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


def environment_lines(view: Mapping[str, Any] | None) -> list[str]:
    """The environment section: the plan's, then each task whose own differs, as only what differs."""
    if view is None:
        return []
    own = _environment_items(view)
    parts = list(own.values())
    if view["worktreeinclude"]:  # after the plan's include patterns, which are added to it
        parts.insert(1 if "include" in own else 0,
                     f"include from .worktreeinclude: {', '.join(view['worktreeinclude'])}")
    lines = ["environment of each task's worktree:",
             *(f"  {safe_line(part)}" for part in parts or ["nothing beyond the tracked files"])]
    tasks: dict[str, Any] = view["tasks"]
    for task_id, env in list(tasks.items())[:LINES_SHOWN]:
        theirs = _environment_items(env)
        changed = [theirs.get(key, f"no {key}") for key in {**own, **theirs}
                   if own.get(key) != theirs.get(key) and (key in theirs or key not in _BELONGS_TO_SETUP)]
        if changed:
            lines.append(safe_line(f"  task {task_id}: {'; '.join(changed)}"))
    if len(tasks) > LINES_SHOWN:
        lines.append(f"  … and {len(tasks) - LINES_SHOWN} more tasks with their own; --json lists them all")
    return lines


_BELONGS_TO_SETUP = frozenset({"cached", "setup_timeout"})  # said of a task without setup, "no setup" is enough


def _environment_items(env: Mapping[str, Any]) -> dict[str, str]:
    """An environment's parts as one short line each, by key; what it does not set left out."""
    items: dict[str, str] = {}
    if env["include"]:
        items["include"] = f"include: {', '.join(env['include'])}"
    origin = f" (from {env['source']})" if env["source"] != "plan" else ""
    if env["setup"]:
        items["setup"] = f"setup{origin}: {_commands(env['setup'])}"
        inputs = env["setup_inputs"]
        items["cached"] = (f"cached: setup reruns only when {', '.join(inputs)} "
                           f"change{'s' if len(inputs) == 1 else ''}"
                           if env["cached"] else "setup runs before every attempt (no setup_inputs)")
    if env["teardown"]:
        items["teardown"] = f"teardown{origin}: {_commands(env['teardown'])}"
    if (env["setup"] or env["teardown"]) and env["setup_timeout_s"] != NO_ENVIRONMENT.setup_timeout_s:
        items["setup_timeout"] = f"setup_timeout: {format_duration(env['setup_timeout_s'])}"
    if env["keep"]:
        items["keep"] = f"keep: {', '.join(env['keep'])}"
    if env["ports"]:
        items["ports"] = f"ports: {env['ports']} per task from $ORCHARD_PORT (also $CONDUCTOR_PORT)"
    if env["env"]:
        items["env"] = f"env: {', '.join(env['env'])}"
    return items


def _commands(commands: list[list[str]]) -> str:
    """Commands run in order, each only after the one before passed."""
    return " && ".join(shlex.join(argv) for argv in commands)
