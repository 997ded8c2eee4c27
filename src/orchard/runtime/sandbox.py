"""Confining an attempt's processes (the agent, its verify command) with bubblewrap.

Under `sandbox: bwrap` (or `auto` where bwrap works) every process an attempt starts sees the file system
read-only except: its worktree; its own part of orchard's repository (the worktree's administrative directory, the
object store, the directory of the run's task branches); a private `/tmp` and `/dev/shm` (the host's are hidden,
except what is bound); the state directories its agent kind declares (`~/.claude`, `~/.codex` …), the paths its
entry lists in `writable`, and its outbox (`runtime.outbox`). orchard's `.orchard/` (the store, the plan snapshot,
orchard's repository's config and hooks) and the user's checkout stay read-only. It runs in a PID namespace of its
own, so everything it started (`setsid` daemons too) dies with it, and normally dies with orchard
(`--die-with-parent`; where bwrap 0.8 leaves it behind, `runtime.recovery.reap_orphans` ends it on the next
resume or cancel). The network is left as it is unless `network: none`.

This module builds argv only; `runtime.process` spawns.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from orchard.agents.base import ExitInfo, Invocation
from orchard.agents.requirements import REQUIREMENTS
from orchard.core.model import AgentSpec, Plan
from orchard.errors import EnvironmentProblem
from orchard.runtime.context import Host, RunContext
from orchard.runtime.process import run_briefly
from orchard.vcs.git import admin_dir

PRIVATE_TMP = "/tmp"  # noqa: S108 - inside the sandbox: a tmpfs of its own, not the host's /tmp
PRIVATE_SHM = "/dev/shm"  # noqa: S108 - the same for POSIX shared memory
_IGNORE_TERM = ("env", "--ignore-signal=TERM")  # coreutils 8.31 or newer
_RESTORE_TERM = ("env", "--default-signal=TERM")
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"


@dataclass(frozen=True)
class Confinement:
    """Where one attempt's processes may write, and whether they have a network."""

    worktree: Path
    readable: tuple[Path, ...]  # bound read-only (needed even where the rest of the tree is hidden, e.g. in /tmp)
    writable: tuple[Path, ...]
    network: bool = True


def mode_for(plan: Plan, agent: AgentSpec) -> str:
    """The sandbox mode an agent's attempts get: its own `sandbox`, else the plan's (`auto` resolved here)."""
    mode = str(agent.option("sandbox", plan.sandbox))
    if mode == "auto":
        return "bwrap" if bwrap_problem() is None else "none"
    return mode


def network_for(plan: Plan, agent: AgentSpec) -> bool:
    return str(agent.option("network", plan.network)) != "none"


@dataclass(frozen=True)
class Sandboxing:
    """How one agent's processes are confined in a run, as the plan and its entry say (a value an attempt's job
    carries to its host)."""

    mode: str  # "bwrap" or "none"
    network: bool

    @staticmethod
    def of(plan: Plan, agent: AgentSpec) -> Sandboxing:
        return Sandboxing(mode_for(plan, agent), network_for(plan, agent))

    @property
    def confined(self) -> bool:
        return self.mode == "bwrap"


@functools.cache
def bwrap_problem() -> str | None:
    """Why bubblewrap cannot confine processes on this machine (None: it can). Asked once per process."""
    binary = shutil.which("bwrap")
    if binary is None:
        return f"bwrap is not installed ({INSTALL_HINT})"
    probe = run_briefly([*_IGNORE_TERM, binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                         "--unshare-pid", "--die-with-parent", "--", *_RESTORE_TERM, "/bin/sh", "-c", "exit 0"],
                        timeout_s=10)
    if probe.returncode != 0:
        return f"bwrap cannot create a sandbox here: {probe.output or probe.problem or 'exit ' + str(probe.returncode)}"
    return None


def sandbox_warnings(plan: Plan) -> list[str]:
    """Check the plan's sandbox modes against this machine: an explicit `bwrap` that cannot work is an error; an
    `auto` that falls back is returned as a warning to record."""
    wanted = {str(a.option("sandbox", plan.sandbox)) for a in plan.agents.values()}
    problem = bwrap_problem() if wanted & {"auto", "bwrap"} else None
    if problem and "bwrap" in wanted:
        raise EnvironmentProblem(f"sandbox: bwrap was asked for, but {problem}")
    if problem and "auto" in wanted:
        return [f"sandbox: auto runs agents unconfined: {problem}"]
    return []


def confined_argv(argv: Sequence[str], box: Confinement) -> tuple[str, ...]:
    """`argv` run inside bubblewrap with `box`'s view of the file system.

    bubblewrap dies of a SIGTERM (and with it, `--die-with-parent`, the whole sandbox), so a graceful stop would be
    a kill: it starts with SIGTERM ignored (`env --ignore-signal`) and the agent with it restored, so the TERM a stop
    sends the process group reaches the agent alone and the grace period holds; a SIGKILL still ends everything."""
    args = [*_IGNORE_TERM, "bwrap", "--die-with-parent", "--unshare-pid", "--ro-bind", "/", "/", "--dev", "/dev",
            "--proc", "/proc", "--tmpfs", PRIVATE_TMP, "--tmpfs", PRIVATE_SHM]
    if not box.network:
        args.append("--unshare-net")
    for path in _existing((*_hidden_roots(argv), *box.readable)):
        args += ["--ro-bind", str(path), str(path)]
    for path in _existing((*box.writable, box.worktree)):
        args += ["--bind", str(path), str(path)]
    return (*args, "--chdir", str(box.worktree.resolve()), "--", *_RESTORE_TERM, *argv)


def _hidden_roots(argv: Sequence[str]) -> list[Path]:
    """The top directories under /tmp or /dev/shm that the command itself lives in (a program, the interpreter its
    `#!` line names, or a script it is given, installed there): bound back read-only, so the private /tmp hides only
    what the attempt does not run."""
    program = shutil.which(argv[0]) or argv[0] if argv else ""
    found = [program, *_interpreter(program), *(a for a in argv[1:] if a.startswith("/"))] if argv else []
    roots = []
    for text in found:
        for path in {*_link_chain(Path(text)), Path(os.path.realpath(text))}:
            for hidden in (PRIVATE_TMP, PRIVATE_SHM):
                parts = path.parts
                top = Path(hidden).parts
                if path.is_absolute() and parts[:len(top)] == top and len(parts) > len(top) and path.exists():
                    roots.append(Path(*parts[:len(top) + 1]))
    return roots


def _link_chain(path: Path, hops: int = 40) -> list[Path]:
    """`path` and every path its symlinks lead through on the way to the file: a link in /tmp to a venv's python
    that is itself under /tmp needs both directories bound, and the resolved path alone names neither."""
    chain = [path]
    while hops and path.is_symlink():
        path, hops = path.parent / os.readlink(path), hops - 1
        chain.append(path)
    return chain


def _interpreter(program: str) -> list[str]:
    """The interpreter a script's `#!` line names (with `/usr/bin/env NAME`, NAME found on PATH), if any."""
    try:
        with open(program, "rb") as fh:
            line = fh.readline(256)
    except OSError:
        return []
    words = line[2:].decode(errors="replace").split() if line.startswith(b"#!") else []
    if words and os.path.basename(words[0]) == "env":
        words = [shutil.which(w) or w for w in words[1:] if not w.startswith("-")][:1]
    return [w for w in words[:1] if w.startswith("/")]


def _existing(paths: Sequence[Path]) -> list[Path]:
    """Resolved paths that exist, each once, parents before children (a later bind may reopen part of an earlier)."""
    seen = dict.fromkeys(p.resolve() for p in paths if os.path.lexists(p))
    return sorted(seen, key=lambda p: len(p.parts))


def sandboxed_exit(info: ExitInfo) -> ExitInfo:
    """bubblewrap reports a child killed by a signal as exit 128 + the signal: give it back as the signal."""
    code = info.returncode
    if code is not None and 128 < code <= 128 + 64 and info.signal is None:
        return replace(info, returncode=None, signal=code - 128)
    return info


def box_for(host: Host, agent: AgentSpec, sandboxing: Sandboxing, *, run_id: str, worktree: Path,
            prompt_file: Path | None, outbox: Path | None = None) -> Confinement | None:
    """The confinement of one attempt's processes on `host` under `agent`'s sandbox mode (None: unconfined)."""
    if not sandboxing.confined:
        return None
    own = host.own.root
    admin = admin_dir(worktree)
    task_refs = own / "refs" / "heads" / "orchard" / run_id / "task"
    task_refs.mkdir(parents=True, exist_ok=True)  # packed refs leave no directory behind
    extra = [Path(os.path.expanduser(p)) for p in agent.option("writable", ()) or ()]
    for path in extra:
        path.mkdir(parents=True, exist_ok=True)  # asked for by the plan: it is there to be written
    state = state_paths(agent)
    readable = (own, host.user_repo.git_dir / "objects", *((prompt_file,) if prompt_file else ()))
    writable = (*((admin,) if admin else ()), own / "objects", task_refs, *state, *extra,
                *((outbox,) if outbox else ()))
    return Confinement(worktree, readable, writable, sandboxing.network)


def check_box(ctx: RunContext, agent: str, worktree: Path) -> Confinement | None:
    """The confinement of a command the run itself starts in a worktree of this machine (a check, a teardown owed
    by a dead session) under `agent`'s sandbox."""
    spec = ctx.plan.agents[agent]
    return box_for(ctx.host, spec, Sandboxing.of(ctx.plan, spec), run_id=ctx.run_id, worktree=worktree,
                   prompt_file=None)


def confine(inv: Invocation, box: Confinement | None) -> Invocation:
    """`inv` as it runs inside `box` (unchanged without one); temporary files go to the sandbox's private /tmp."""
    if box is None:
        return inv
    return replace(inv, argv=confined_argv(inv.argv, box), env={**inv.env, "TMPDIR": PRIVATE_TMP})


def state_paths(agent: AgentSpec) -> list[Path]:
    """Where an agent of this kind keeps its own state (created if missing, so that a first run on a machine
    writes into the bound place): its declared paths under $HOME, and directories its environment names."""
    env = {**os.environ, **dict(agent.option("env", {}) or {})}
    home = Path(env.get("HOME") or Path.home())
    need = REQUIREMENTS.get(agent.type)
    paths = []
    for entry in need.state if need else ():
        if entry.startswith("$"):
            if not env.get(entry[1:]):
                continue
            path = Path(env[entry[1:]])
            path.mkdir(parents=True, exist_ok=True)
        else:
            path = home / entry
            if not path.exists() and path.suffix == ".json":  # a file the agent rewrites: valid and empty
                path.write_text("{}\n", encoding="utf-8")
            elif not path.exists():
                path.mkdir(parents=True)
        paths.append(path)
    return paths
