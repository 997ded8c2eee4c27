"""The plan's programs and files as they are on this machine and in the checkout: a verify or agent program that
is not there (`orchard doctor PLAN`, and the verify failure's message), and files the plan names that tasks will
not see because they are not committed (a warning as `orchard run` starts)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from orchard.core.model import Plan
from orchard.core.plan_refs import ProgramUse, programs, referenced_files
from orchard.vcs.reading import uncommitted_paths

PRIVATE = ".orchard/"


def program_problem(program: str, *, cwd: Path, path: str | None) -> str | None:
    """Why `program` cannot be started from `cwd` with `path` as PATH ("not found", "not executable"), else None:
    a program with a slash is a file (relative to `cwd`), any other is looked up on PATH, as exec would."""
    if "/" in program:
        target = cwd / program
        if not target.exists():
            return "not found"
        return None if target.is_file() and os.access(target, os.X_OK) else "not executable"
    return None if shutil.which(program, path=path) else "not found on PATH"


@dataclass(frozen=True, slots=True)
class MissingProgram:
    """A program of the plan that cannot be started, and why."""

    use: ProgramUse
    problem: str

    def message(self) -> str:
        return f"{self.use.what}: program {self.use.program!r} {self.problem}"


def missing_programs(plan: Plan, root: Path, *, path: str | None = None) -> list[MissingProgram]:
    """The plan's programs that cannot be started in a worktree of `root` (PATH: `path`, else this process's);
    one the environment's setup may make is left out, since it cannot be judged before setup ran."""
    path = os.environ.get("PATH") if path is None else path
    missing = []
    for use in programs(plan):
        problem = program_problem(use.program, cwd=root, path=path)
        if problem and not use.may_be_made:
            missing.append(MissingProgram(use, problem))
    return missing


def uncommitted_warning(root: Path, plan: Plan, *, limit: int = 5) -> str | None:
    """A warning when the checkout has uncommitted or untracked files, naming first those the plan refers to
    (tasks start from a commit and will not see them); None for a clean checkout."""
    changed = [p for p in uncommitted_paths(root) if not p.startswith(PRIVATE)]
    if not changed:
        return None
    named = referenced_files(plan)
    own = [f"{p} ({named[p]})" for p in changed if p in named]
    text = (f"your checkout has {len(changed)} uncommitted or untracked file(s); tasks start from a commit and "
            "will not see them")
    if own:
        more = f" and {len(own) - limit} more" if len(own) > limit else ""
        return f"{text}, including what the plan uses: {', '.join(own[:limit])}{more} (commit them first)"
    listed = ", ".join(changed[:limit]) + (f" and {len(changed) - limit} more" if len(changed) > limit else "")
    return f"{text}: {listed}"
