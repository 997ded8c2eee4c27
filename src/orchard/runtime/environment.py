"""A task's environment in its worktree: the untracked files that `environment.include` and the repository's
`.worktreeinclude` name (git-ignore syntax) copied from the user's checkout, and kept out of every commit; the
`setup` commands run before the agent and the `teardown` commands after the attempt, whatever its outcome.

A symlink is copied as the link, never followed; nothing under `.orchard/` is ever copied (orchard's own state and
the agents' secrets live there); a file the worktree has already (tracked there) is left as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchard.agents.base import ExitInfo, Invocation, TailBuffer
from orchard.agents.requirements import agent_environment
from orchard.core.model import Environment
from orchard.runtime.context import Host
from orchard.runtime.process import Supervision, append_log, run_process
from orchard.runtime.sandbox import Confinement, confine, sandboxed_exit
from orchard.vcs import Repo, staged_blobs, untracked_entries, untracked_matching
from orchard.vcs.git import admin_dir

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


@dataclass(frozen=True)
class PhaseResult:
    """How a task's setup or teardown went: `detail` names the command that failed and its output's tail;
    `skipped` when a reused worktree's setup is known to be current."""

    passed: bool
    detail: str = ""
    duration_s: float = 0.0
    skipped: bool = False
    exit_code: int | None = None  # of the command that failed
    started: bool = True  # False when that command could not even be started (not found, not executable)


@dataclass(frozen=True)
class SetupStamp:
    """A worktree's record of the setup it last ran: `current` when its fingerprint matches and everything untracked
    that setup left (a `.venv`) is still there (setup can be skipped), `save` after setup ran. Without
    `setup_inputs` there is no stamp and setup runs every time."""

    worktree: Path
    record: Path | None
    stamp: str | None

    @property
    def current(self) -> bool:
        if self.stamp is None or self.record is None or not self.record.is_file():
            return False
        try:
            saved = json.loads(self.record.read_text())
        except ValueError:
            return False
        left = saved.get("left", []) if isinstance(saved, dict) else []
        # what `keep` did not keep is gone: the setup that made it must run again
        return saved.get("stamp") == self.stamp and all(os.path.lexists(self.worktree / p) for p in left)

    def save(self, passed: bool) -> None:
        if self.record is None:
            return
        self.record.unlink(missing_ok=True)
        if passed and self.stamp is not None:
            self.record.parent.mkdir(mode=0o700, exist_ok=True)
            left = [p for p in untracked_entries(self.worktree) if not _byproduct(p)]
            self.record.write_text(json.dumps({"stamp": self.stamp, "left": left}))


BYPRODUCT_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})


def _byproduct(path: str) -> bool:
    """What running Python or a build leaves that nothing needs again (setup need not run to make it anew)."""
    parts = [p for p in path.split("/") if p]
    return bool(parts) and (bool(BYPRODUCT_DIRS & set(parts)) or parts[-1].endswith((".pyc", ".egg-info")))


def setup_stamp(host: Host, worktree: Path, environment: Environment) -> SetupStamp:
    """The setup stamp of a worktree of `host` for `environment`, as its start commit has the setup inputs."""
    found = setup_record(host, worktree)
    record, identity = found if found is not None else (None, "")
    current = setup_fingerprint(worktree, environment)
    return SetupStamp(worktree, record, None if current is None else f"{identity} {current}")


def setup_fingerprint(worktree: Path, environment: Environment) -> str | None:
    """What a worktree's setup depends on: its commands, `env`, and the content of the `setup_inputs` files at the
    attempt's start commit; None without `setup_inputs` (setup then runs every time)."""
    if not environment.setup_inputs:
        return None
    inputs = staged_blobs(worktree, environment.setup_inputs)
    data = json.dumps([environment.setup, environment.env, inputs])
    return hashlib.sha256(data.encode()).hexdigest()


def setup_record(host: Host, worktree: Path) -> tuple[Path, str] | None:
    """Where orchard records the setup fingerprint of a worktree (outside the sandbox's reach), and the identity of
    that worktree it goes with: a token in its entry in orchard's repository, which moves with it through the pool
    and goes when it goes (a new worktree under the same name then never counts as set up)."""
    admin = admin_dir(worktree)
    if admin is None or not admin.is_dir():
        return None
    token = admin / "orchard-worktree-id"
    if not token.is_file():
        token.write_text(secrets.token_hex(8))
    return host.layout.root / "setup" / admin.name, token.read_text().strip()


async def run_phase(host: Host, *, phase: str, commands: tuple[tuple[str, ...], ...], task_id: str,
                    box: Confinement | None, worktree: Path, log_path: Path, env: dict[str, str], timeout_s: float,
                    on_command: Callable[[int, tuple[str, ...]], None] | None = None,
                    env_pass: str | tuple[str, ...] = ()) -> PhaseResult:
    """Run a phase's commands in order in the worktree on `host` (in `box`, the agent's sandbox; with the basics of
    the environment, the variables `env_pass` names and `env`), logged under a marker, all of them within
    `timeout_s`; stops at the first failure."""
    started, tail = time.monotonic(), TailBuffer(lines=40)
    for index, argv in enumerate(commands):
        if on_command is not None:
            on_command(index, argv)
        tail.lines.clear()  # the tail of the command that fails is the one to show
        append_log(log_path, host.redactor(f"\n[orchard: {phase}{' (in bwrap)' if box else ''}: {shlex.join(argv)}]\n"))
        left = max(0.1, timeout_s - (time.monotonic() - started))
        stop = None if phase == "teardown" else host.processes.stop_for(task_id)  # teardown always runs
        info = await run_process(confine(Invocation(argv, worktree, env=env), box), log_path,
                                 lambda line, _s: tail.add(line), Supervision(left, None, host.processes.grace_s),
                                 on_spawn=lambda pid: host.processes.started(task_id, pid),
                                 base_env=agent_environment(host.environ, "", env_pass), redact=host.redactor.bytes,
                                 stop=stop)
        info = sandboxed_exit(info) if box else info
        host.processes.ended(task_id)
        if info.returncode != 0 or info.spawn_error:
            return PhaseResult(False, f"{phase} failed ({_why(info, timeout_s)}): {shlex.join(argv)}"
                                      + (f"\n{info.spawn_error or tail.text()}" if info.spawn_error or tail.text()
                                         else ""), time.monotonic() - started, exit_code=info.returncode,
                               started=not info.spawn_error)
    return PhaseResult(True, "", time.monotonic() - started)


def _why(info: ExitInfo, timeout_s: float) -> str:
    if info.timed_out:
        return f"timed out after {timeout_s:g}s"
    if info.spawn_error:
        return "could not start"
    return f"exit {info.returncode}" if info.returncode is not None else f"signal {info.signal}"
