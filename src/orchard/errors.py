"""The one exception tree for user-facing errors; `cli` maps it to exit codes in one place.

Stdlib only, so every layer may raise these. Agent failures are *values* (`core.model.Outcome`), never these.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One validation problem, located by file, task and field (any may be empty)."""

    file: str
    message: str
    task: str = ""
    field: str = ""

    def __str__(self) -> str:
        where = [self.file] if self.file else []
        if self.task:
            where.append(f"task '{self.task}'")
        if self.field:
            where.append(f"field '{self.field}'")
        return f"{': '.join(where)}: {self.message}" if where else self.message


class OrchardError(Exception):
    """Base of every error orchard reports to a user; `exit_code` is what the CLI exits with."""

    exit_code = 1


class UsageError(OrchardError):
    """Bad command-line usage or arguments."""

    exit_code = 2


class PlanError(OrchardError):
    """An invalid plan: carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = f"invalid plan: {count} problem{'s' if count != 1 else ''}"
        super().__init__(head + "".join(f"\n  - {p}" for p in self.problems))


class EnvironmentProblem(OrchardError):
    """The environment cannot run orchard: not a git repository, git too old, disk full …"""

    exit_code = 3


class RepoLocked(EnvironmentProblem):
    """Another live orchard run holds the repository."""


class GitError(OrchardError):
    """A git command failed unexpectedly; carries the argv and git's own message."""

    exit_code = 3

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"git {' '.join(argv)} failed ({returncode}): {stderr.strip()}")


class RefMoved(GitError):
    """A ref was not at the value orchard expected when it went to move it (someone else moved it)."""


class StoreError(OrchardError):
    """The state store is unreadable, or a run / task asked for does not exist."""

    exit_code = 2


class Interrupted(OrchardError):
    """The run was interrupted (Ctrl-C / SIGTERM); it can be resumed."""

    exit_code = 130
