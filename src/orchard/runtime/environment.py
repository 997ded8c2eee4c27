"""A task's environment in its worktree: the untracked files that `environment.include` and the repository's
`.worktreeinclude` name (git-ignore syntax) copied from the user's checkout, and kept out of every commit.

A symlink is copied as the link, never followed; nothing under `.orchard/` is ever copied (orchard's own state and
the agents' secrets live there); a file the worktree has already (tracked there) is left as it is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from orchard.core.model import Environment
from orchard.vcs import Repo, untracked_matching

WORKTREEINCLUDE = ".worktreeinclude"  # read by Claude Code, Codex and ccmanager too
PRIVATE = ".orchard/"


def included_files(user: Repo, environment: Environment) -> list[str]:
    """The untracked files of the user's checkout that the environment's `include` or `.worktreeinclude` names."""
    listing = user.root / WORKTREEINCLUDE
    files = [listing] if listing.is_file() else []
    found = untracked_matching(user, environment.include, files)
    return [path for path in found if not path.startswith(PRIVATE)]


def copy_included(user: Repo, worktree: Path, paths: list[str]) -> list[str]:
    """Copy `paths` from the user's checkout into `worktree` (links as links); returns those copied."""
    copied = []
    for rel in paths:
        source, target = user.root / rel, worktree / rel
        if os.path.lexists(target) or not os.path.lexists(source):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        elif source.is_file():
            shutil.copy2(source, target, follow_symlinks=False)
        else:
            continue
        copied.append(rel)
    return copied
