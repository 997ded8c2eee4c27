"""Where orchard keeps things under `<repo>/.orchard/`: the state store, the lock, worktrees, logs, prompts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from orchard.errors import EnvironmentProblem


@dataclass(frozen=True)
class Layout:
    """Paths inside one repository's `.orchard/` directory (created private: mode 0700)."""

    root: Path

    @staticmethod
    def for_repo(repo_root: Path) -> Layout:
        return Layout(repo_root / ".orchard")

    def ensure(self) -> None:
        """Create the directory, private, and ignored by the user's git without touching their `info/exclude`;
        EnvironmentProblem (exit 3) if it cannot be written."""
        try:
            self.root.mkdir(mode=0o700, exist_ok=True)
            os.chmod(self.root, 0o700)
            ignore = self.root / ".gitignore"
            if not ignore.is_file():
                ignore.write_text("# orchard's own files: never part of the repository\n*\n", encoding="utf-8")
        except OSError as exc:
            raise EnvironmentProblem(f"cannot write {self.root} ({exc.strerror or exc}): orchard keeps its runs "
                                     "there; make it writable") from None

    @property
    def git_dir(self) -> Path:
        """orchard's own repository (`vcs.private`): task worktrees, the pool and the merge queue use it."""
        return self.root / "git"

    @property
    def state_db(self) -> Path:
        return self.root / "state.db"

    @property
    def lock_file(self) -> Path:
        return self.root / "lock"

    @property
    def land_marker(self) -> Path:
        """Present while `land` moves the user's checkout (`vcs.land`): a land killed then is finished next time."""
        return self.root / "land.json"

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def worktrees(self, run_id: str) -> Path:
        return self.root / "worktrees" / run_id

    def worktree(self, run_id: str, task_id: str) -> Path:
        return self.worktrees(run_id) / task_id

    def log(self, run_id: str, task_id: str, attempt: int) -> Path:
        return self.run_dir(run_id) / "logs" / f"{task_id}.{attempt}.log"

    def prompt_file(self, run_id: str, task_id: str, attempt: int) -> Path:
        return self.run_dir(run_id) / "prompts" / f"{task_id}.{attempt}.md"

    def outbox(self, run_id: str, task_id: str, attempt: int) -> Path:
        """The attempt's own writable directory (`runtime.outbox`): its summary, its `orchard add` requests."""
        return self.run_dir(run_id) / "outbox" / f"{task_id}.{attempt}"


def integration_branch(run_id: str) -> str:
    return f"orchard/{run_id}/integration"


def task_branch(run_id: str, task_id: str) -> str:
    return f"orchard/{run_id}/task/{task_id}"
