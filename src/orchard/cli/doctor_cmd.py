"""`orchard doctor`: which agent CLIs are here, their versions, their credentials, whether git is new enough, which
of a plan's programs (command agents', verify's) cannot be started, and which include patterns (`.worktreeinclude`,
a plan's `environment.include`) name no file to copy; with `--executor ray`, the same on every node of the cluster
(`cluster.doctor`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchard.agents.requirements import REQUIREMENTS
from orchard.cli.common import load_plan, repo_dir, stdout_console
from orchard.cli.run_cmds import executor_option, ray_address_of
from orchard.core.safe_text import safe_line
from orchard.core.sizes import format_size
from orchard.errors import OrchardError
from orchard.runtime.probe import agent_report, git_report
from orchard.vcs import Repo, find_repo, untracked_matching

if TYPE_CHECKING:
    from rich.console import Console

    from orchard.core.model import Plan

PRIVATE = ".orchard/"  # never copied into a worktree (`runtime.environment`)


def include_warnings(repo: Repo, plan: Plan | None) -> list[dict[str, Any]]:
    """The include patterns that match no untracked file of the checkout, so that no worktree gets anything by
    them: each line of `.worktreeinclude`, and the plan's `environment.include` (its own and its tasks')."""
    from orchard.plan.worktreeinclude import WORKTREEINCLUDE, include_lines

    listed: list[tuple[str, dict[str, Any]]] = [(p, {"file": WORKTREEINCLUDE, "line": n})
                                                for n, p in include_lines(repo.root)]
    if plan is not None:
        own = [plan.environment, *(t.environment for t in plan.tasks if t.environment is not None)]
        patterns = dict.fromkeys(p for env in own for p in env.include)
        listed += [(p, {"file": plan.source, "field": "environment.include"}) for p in patterns]
    return [{**where, "pattern": pattern,
             "message": f"{pattern!r} matches no untracked file in your checkout: worktrees get nothing by it"}
            for pattern, where in listed if not pattern.startswith("!") and not _matches(repo, pattern)]


def _matches(repo: Repo, pattern: str) -> bool:
    """Whether an include pattern names a file a worktree would get (a pattern git cannot use counts as one)."""
    try:
        return any(not path.startswith(PRIVATE) for path in untracked_matching(repo, [pattern]))
    except OrchardError:
        return True


@click.command("doctor")
@click.argument("plan_path", metavar="[PLAN]", required=False, type=click.Path(path_type=Path))
@click.option("--json", "json_mode", is_flag=True, help="Print the findings as JSON.")
@executor_option
@click.pass_context
def doctor_cmd(ctx: click.Context, /, *, plan_path: Path | None, json_mode: bool, **flags: Any) -> int:
    """Check git and the agent CLIs (those a PLAN uses, or all known ones): found, version, credentials; with
    --executor ray, on every node of the cluster too."""
    plan = load_plan(ctx, plan_path) if plan_path is not None else None
    if plan is not None:
        # an entry's `binary`, else its kind's own name (`cursor-agent` for `type: cursor`)
        wanted = sorted({(a.type, str(a.option("binary", REQUIREMENTS[a.type].binary)))
                         for a in plan.agents.values() if a.type in REQUIREMENTS})
    else:
        wanted = [(kind, need.binary) for kind, need in REQUIREMENTS.items()]
    git, agents = git_report(), [agent_report(kind, binary) for kind, binary in wanted]
    checkout = _checkout(ctx) if git["ok"] else None
    warnings = include_warnings(checkout, plan) if checkout is not None else []
    if checkout is not None and plan is not None:
        from orchard.runtime.imports import import_traps

        warnings += [{"file": plan.source, "field": "verify", "message": trap.message()}
                     for trap in import_traps(checkout.root, plan)]
    programs = program_reports(checkout, plan) if plan is not None else []
    report: dict[str, Any] = {"git": git, "agents": agents, "programs": programs, "warnings": warnings}
    needed_ok = git["ok"] and (plan_path is None or all(a["ok"] for a in agents)) and not programs
    address = ray_address_of(flags, plan.executor if plan is not None else "local")
    if address:
        from orchard.cluster.doctor import check_nodes

        report["nodes"] = check_nodes(address, wanted, agents_needed=plan is not None)
        needed_ok = needed_ok and all(node["ok"] for node in report["nodes"])
    if json_mode:
        click.echo(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0 if needed_ok else 3


def program_reports(checkout: Repo | None, plan: Plan) -> list[dict[str, Any]]:
    """The plan's command-agent, verify and gate programs that cannot be started here (a typo such as `pyhton3`
    would otherwise show only at run time, as every task's failed verify)."""
    from orchard.runtime.programs import missing_programs

    root = checkout.root if checkout is not None else Path(plan.source).parent
    return [{"file": plan.source, "program": m.use.program, "used_by": m.use.what, "problem": m.problem,
             "message": m.message()} for m in missing_programs(plan, root)]


def _checkout(ctx: click.Context) -> Repo | None:
    """The repository the command runs in, if it runs in one."""
    try:
        return find_repo(repo_dir(ctx))
    except OrchardError:
        return None


def _print(report: dict[str, Any]) -> None:
    out = stdout_console()
    git = report["git"]
    out.print(f"git: {git.get('version')} ✓" if git["ok"] else f"git: ✗ {git['problem']}")
    for a in report["agents"]:
        mark = "✓" if a["ok"] else "✗"
        # what a CLI printed for its version: shown, never obeyed
        found = safe_line(f"{a['version']} ({a['path']})" if a["version"] else f"not usable: {a['problem']}")
        out.print(f"{a['kind']}: {mark} {found}", soft_wrap=True)
        if a["credentials"]:
            out.print(f"  credentials: {', '.join(a['credentials'])}")
        else:
            out.print(f"  credentials: none found (set one of {', '.join(a['needs_one_of'])})")
        if not a["version"]:
            out.print(f"  install: {a['install']}")
        if a["notes"]:
            out.print(f"  note: {a['notes']}")
    for node in report.get("nodes", ()):
        _print_node(out, node)
    for program in report["programs"]:
        out.print(safe_line(f"✗ {program['file']}: {program['message']}"), soft_wrap=True)
    for warning in report["warnings"]:
        where = f"line {warning['line']}" if "line" in warning else warning["field"]
        out.print(safe_line(f"warning: {warning['file']} {where}: {warning['message']}"), soft_wrap=True)


def _print_node(out: Console, node: dict[str, Any]) -> None:
    """One node of the cluster: what it has, and what keeps it from running attempts."""
    mark = "✓" if node["ok"] else "✗"
    if "git" not in node:  # the check itself did not run there
        out.print(safe_line(f"node {node['node']}: {mark} {'; '.join(node['problems'])}"), soft_wrap=True)
        return
    git = node["git"].get("version", "?")
    out.print(safe_line(f"node {node['node']} ({node['hostname']}): {mark} git {git}, orchard {node['orchard']} "
                        f"({node['orchard_source']}), ray {node['ray']}, {format_size(node['disk_free'])} free"),
              soft_wrap=True)
    agents = ", ".join(f"{a['kind']} {'✓' if a['ok'] else '✗'}" for a in node["agents"])
    if agents:
        out.print(safe_line(f"  agents: {agents}"), soft_wrap=True)
    for problem in node["problems"]:
        out.print(safe_line(f"  ✗ {problem}"), soft_wrap=True)
