"""`orchard doctor`: which agent CLIs are here, their versions, their credentials, and whether git is new enough."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from orchard.agents.codex import bwrap_problem, workspace_write_roots
from orchard.agents.requirements import REQUIREMENTS
from orchard.cli.common import load_plan, stdout_console
from orchard.core.safe_text import safe_line
from orchard.errors import EnvironmentProblem
from orchard.runtime.probe import probe_binary
from orchard.vcs import git_version, require_git


def agent_report(kind: str, binary: str) -> dict[str, Any]:
    """Binary, version and credentials of one agent kind."""
    need = REQUIREMENTS[kind]
    probe = probe_binary(binary, need.version_args)
    env = [name for name in need.credential_env if os.environ.get(name)]
    home = Path.home()
    files = [name for name in need.credential_files if (home / name).is_file()]
    notes = "; ".join(note for note in (need.notes, _sandbox_note(kind, binary)) if note)
    return {"kind": kind, "binary": binary, "path": probe.path, "version": probe.version, "problem": probe.problem,
            "credentials": env + [f"~/{f}" for f in files], "needs_one_of": list(need.credential_env),
            "install": need.install, "notes": notes,
            "ok": probe.version is not None and bool(env or files)}


def _sandbox_note(kind: str, binary: str) -> str | None:
    """What keeps an agent's own sandbox from working here, as far as it can be told before a run (codex: whether
    it will run its own bubblewrap; the worktree, also writable in its sandbox, is not known yet)."""
    return bwrap_problem(binary, workspace_write_roots(None, os.environ)) if kind == "codex" else None


def git_report() -> dict[str, Any]:
    try:
        require_git()
    except EnvironmentProblem as exc:
        return {"ok": False, "problem": str(exc)}
    return {"ok": True, "version": ".".join(map(str, git_version()))}


@click.command("doctor")
@click.argument("plan_path", metavar="[PLAN]", required=False, type=click.Path(path_type=Path))
@click.option("--json", "json_mode", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def doctor_cmd(ctx: click.Context, plan_path: Path | None, json_mode: bool) -> int:
    """Check git and the agent CLIs (those a PLAN uses, or all known ones): found, version, credentials."""
    if plan_path is not None:
        plan = load_plan(ctx, plan_path)
        wanted = sorted({(a.type, str(a.option("binary", a.type))) for a in plan.agents.values()
                         if a.type in REQUIREMENTS})
    else:
        wanted = [(kind, need.binary) for kind, need in REQUIREMENTS.items()]
    git, agents = git_report(), [agent_report(kind, binary) for kind, binary in wanted]
    report: dict[str, Any] = {"git": git, "agents": agents}
    needed_ok = git["ok"] and (plan_path is None or all(a["ok"] for a in agents))
    if json_mode:
        click.echo(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0 if needed_ok else 3


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
