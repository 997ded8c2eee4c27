"""The planner's scratch worktree: a detached checkout of one commit in a temporary directory, removed (with git's
record of it) when the draft ends, however it ends. No branch is made and the user's checkout is not touched.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchard.errors import OrchardError
from orchard.vcs import Repo, add_detached_worktree, prune_worktrees, remove_worktree


@dataclass(frozen=True)
class Scratch:
    """Where one draft works: the worktree the planner reads, and orchard's own files beside it (prompts, the
    agent's outbox, its logs), outside the worktree."""

    worktree: Path
    files: Path


@contextlib.contextmanager
def scratch_worktree(repo: Repo, commit: str) -> Iterator[Scratch]:
    """A detached worktree of `commit` in a new temporary directory, removed on the way out."""
    top = Path(tempfile.mkdtemp(prefix="orchard-draft-")).resolve()
    worktree, files = top / "repo", top / "orchard"
    files.mkdir(mode=0o700)
    try:
        add_detached_worktree(repo, worktree, commit)
        yield Scratch(worktree, files)
    finally:
        _remove(repo, worktree, top)


def _remove(repo: Repo, worktree: Path, top: Path) -> None:
    """The worktree and git's record of it gone, and the temporary directory; a failed `worktree remove` (an agent
    broke the worktree) still ends with both gone: the directory removed, then the record pruned."""
    try:
        remove_worktree(repo, worktree)
        removed = True
    except (OrchardError, OSError):
        removed = False
    shutil.rmtree(top, ignore_errors=True)
    if not removed:
        with contextlib.suppress(OrchardError, OSError):
            prune_worktrees(repo)
