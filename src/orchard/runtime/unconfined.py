"""What orchard does for agents that run without a sandbox (`sandbox: none`, or `auto` where bubblewrap cannot run),
where no PID namespace ends their daemons and no read-only mount keeps them out of the user's repository.

* orchard makes itself a child subreaper (`PR_SET_CHILD_SUBREAPER`) for the session: a daemon an agent double-forks
  or `setsid`s out of its process group is re-parented to orchard instead of init, so orchard sees it. When an
  attempt ends, the adopted processes that belong to it (its `ORCHARD_TASK_ID`/`ORCHARD_ATTEMPT`, or a working
  directory in its worktree) are killed and reaped; at the end of the session, every child orchard's process did
  not have when the session started (orchard's own have all ended by then; a program that embeds orchard and starts
  processes of its own during a run should run its agents in the sandbox).
* The control files of the user's git directory (config, hooks, info, alternates) are recorded at session start and
  compared when each unconfined attempt ends: whatever changed is put back, and the attempt fails as `tampered` when
  it was the only unconfined one running (otherwise a note names every suspect). The user's checkout itself is
  compared by `git status` before and after each attempt and what changed is noted: the user may be working there
  too, so it is not held against the agent. Other tasks' worktrees are not compared: their own agents write there.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from orchard.vcs import Repo, checkout_status

PR_SET_CHILD_SUBREAPER = 36
CONTROL_DIRS = ("hooks", "info")
CONTROL_FILES = ("config", "config.worktree", "commondir", "objects/info/alternates")

Match = Callable[[dict[str, str], str], bool]  # (environment, working directory) → belongs to what is reaped


def set_subreaper(on: bool) -> bool:
    """Make this process a child subreaper (or stop being one); False where the kernel says no."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def children() -> set[int]:
    """This process's children now."""
    with contextlib.suppress(psutil.Error):
        return {c.pid for c in psutil.Process().children()}
    return set()


def reap_adopted(match: Match, *, spare: Collection[int] = ()) -> int:
    """Kill and reap this process's children that `match` accepts (re-parented daemons), but never those in
    `spare`; returns how many."""
    killed = 0
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error, OSError):
            if child.pid in spare or child.status() == psutil.STATUS_ZOMBIE or not match(child.environ(), child.cwd()):
                continue
            os.kill(child.pid, signal.SIGKILL)
            os.waitpid(child.pid, 0)  # ours now: no one else will
            killed += 1
    return killed


def of_attempt(run_id: str, task_id: str, attempt: int, worktree: Path) -> Match:
    """Processes of one attempt: its environment says so, or they work in its worktree."""
    where = str(worktree) + os.sep

    def match(env: dict[str, str], cwd: str) -> bool:
        mine = (env.get("ORCHARD_RUN_ID") == run_id and env.get("ORCHARD_TASK_ID") == task_id
                and env.get("ORCHARD_ATTEMPT") == str(attempt))
        return mine or (cwd + os.sep).startswith(where)
    return match


def control_files(git_dir: Path) -> dict[str, bytes]:
    """The files of a git directory that decide what git runs (config, hooks, info, alternates), by relative path."""
    found: dict[str, bytes] = {}
    names = [*CONTROL_FILES, *(f"{d}/{e}" for d in CONTROL_DIRS for e in _entries(git_dir / d))]
    for name in names:
        with contextlib.suppress(OSError):
            found[name] = (git_dir / name).read_bytes()
    return found


def _entries(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


@dataclass
class OutsideWatch:
    """The user's repository as it was when the session started, to tell what unconfined agents changed."""

    user: Repo
    baseline: dict[str, bytes] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)  # unconfined attempts now running, as "task/attempt"

    @staticmethod
    def start(user: Repo) -> OutsideWatch:
        return OutsideWatch(user, control_files(user.git_dir))

    def status(self) -> str:
        """The user's checkout as `git status` sees it (to compare before and after an attempt)."""
        return checkout_status(self.user)

    def restore(self) -> list[str]:
        """Put the control files back as they were at session start; returns what had changed."""
        now = control_files(self.user.git_dir)
        changed = sorted(name for name in {*now, *self.baseline} if now.get(name) != self.baseline.get(name))
        for name in changed:
            path = self.user.git_dir / name
            with contextlib.suppress(OSError):
                if name in self.baseline:
                    path.write_bytes(self.baseline[name])
                elif path.is_dir() and not path.is_symlink():
                    continue  # a planted directory under hooks/ or info/ runs nothing by itself
                else:
                    path.unlink()
        return changed


def changed_entries(before: str, after: str) -> list[str]:
    """The paths whose `git status` entry is new or different after (NUL-separated porcelain v1)."""
    old = set(before.split("\0"))
    return sorted({entry[3:] for entry in after.split("\0") if entry and entry not in old})
