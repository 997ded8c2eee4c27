"""Short synchronous probes of the machine for `orchard doctor` (here, or on each node of a cluster): is a binary
there, what version does it print, are an agent's credentials present, is git new enough."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchard.agents.codex import bwrap_problem, workspace_write_roots
from orchard.agents.requirements import REQUIREMENTS
from orchard.errors import EnvironmentProblem
from orchard.runtime.process import run_briefly
from orchard.vcs import git_version, require_git


@dataclass(frozen=True)
class BinaryProbe:
    """Where a binary was found and the first line of its version output (or why not)."""

    path: str | None
    version: str | None
    problem: str = ""


def probe_binary(binary: str, version_args: tuple[str, ...], timeout_s: float = 20.0) -> BinaryProbe:
    """Find `binary` on PATH (or as a path) and run it with `version_args`; never raises."""
    path = shutil.which(binary)
    if path is None:
        return BinaryProbe(None, None, "not found on PATH")
    proc = run_briefly([path, *version_args], timeout_s)
    if proc.returncode is None:
        return BinaryProbe(path, None, f"could not run it: {proc.problem}")
    lines = proc.output.splitlines()
    if proc.returncode != 0:
        return BinaryProbe(path, None, f"`{binary} {' '.join(version_args)}` exited {proc.returncode}")
    return BinaryProbe(path, lines[0].strip() if lines else "?")


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
    """Whether git is here and new enough for orchard, and its version."""
    try:
        require_git()
    except EnvironmentProblem as exc:
        return {"ok": False, "problem": str(exc)}
    return {"ok": True, "version": ".".join(map(str, git_version()))}
