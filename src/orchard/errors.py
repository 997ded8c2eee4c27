"""The one exception tree for user-facing errors; `cli` maps it to exit codes in one place.

Stdlib only, so every layer may raise these. Agent failures are *values* (`core.model.Outcome`), never these.

    OrchardError                  1   base of everything orchard reports to a user
    ├── UngatedTip                1   landing a gated run whose integration tip did not pass its gate
    ├── NotAllMerged              1   landing a run some of whose tasks did not merge, without `--partial`
    ├── DraftFailed               1   `orchard draft`: no valid plan came of the planner's drafts
    ├── UsageError                2   bad command-line usage or arguments
    ├── PlanError                 2   an invalid plan: every problem, each naming file, task and field
    ├── EnvironmentProblem        3   not a git repository, git too old, disk full …
    │   ├── RepoLocked            3   another live run holds the repository
    │   ├── NoAnswer              3   an agent's `orchard add` got no answer from its run in time
    │   └── DiskFull              3   no space left mid-run: the run stopped where a resume picks it up
    ├── StoreError                3   the state store
    │   ├── StoreUnreadable       3   cannot be opened or read (permissions, corruption, a newer schema)
    │   └── NotRecorded           2   no such run, or no such task in it
    └── VcsError                  3   git
        ├── GitError              3   a git command failed (argv, exit status, git's message)
        │   ├── RefMoved          3   a ref was not where orchard expected it when moving it
        │   └── GitTimeout        3   a git command ran past its time limit or was killed by an interrupt
        ├── RefProblem            2   a ref name that is malformed, names nothing, or is taken already
        └── LandRefused           2   landing would touch uncommitted work, another worktree, or conflict

The number is the class's `exit_code`; `orchard.cli.main` is the only place that turns it into an exit status.
A run's own end (completed, failed, interrupted …) is not an error: its exit code is on `core.model.RunStatus`.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class DiskFull(EnvironmentProblem):
    """The file system ran out of space during a run; the run stopped, resumable once space is freed."""


class StoreError(OrchardError):
    """Something about the state store (`.orchard/state.db`)."""

    exit_code = 3


class StoreUnreadable(StoreError):
    """The state store cannot be opened or read: permissions, a corrupt file, a schema newer than this orchard."""

    exit_code = 3


class NotRecorded(StoreError):
    """The run or task asked for is not in the store."""

    exit_code = 2


class VcsError(OrchardError):
    """Something orchard needed from git did not happen."""

    exit_code = 3


class GitError(VcsError):
    """A git command failed unexpectedly; carries the argv and git's own message."""

    exit_code = 3

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"git {' '.join(argv)} failed ({returncode}): {stderr.strip()}")


class RefMoved(GitError):
    """A ref was not at the value orchard expected when it went to move it (someone else moved it)."""


class GitTimeout(GitError):
    """A git command ran past its time limit, or was killed because the run was interrupted."""


class RefProblem(VcsError):
    """A ref name that is malformed, names no commit, or is already taken."""

    exit_code = 2


class UngatedTip(OrchardError):
    """A gated run's integration tip is not a candidate that passed its gate: it is not landed. Nothing changed."""


class NotAllMerged(OrchardError):
    """`orchard land` of a run some of whose tasks did not merge: its integration branch holds part of the plan's
    work, landed only when asked (`--partial`). Nothing changed. Exit code 1, like the failed run it is."""


class LandRefused(VcsError):
    """Landing was refused: uncommitted changes, the base checked out elsewhere, or a conflict. Nothing changed."""

    exit_code = 2


class DraftFailed(OrchardError):
    """No valid plan came of the draft: the planner failed, or its last draft still had problems. Nothing was
    written. Exit code 1, like a task that failed: the input was fine, the agent's work was not."""

    exit_code = 1

    def __init__(self, message: str, rejected: Sequence[Sequence[str]] = ()) -> None:
        self.rejected = tuple(tuple(p) for p in rejected)
        super().__init__(message)


class NoAnswer(EnvironmentProblem):
    """An agent's `orchard add` left its request, and the run's session did not answer in time (it stopped)."""
