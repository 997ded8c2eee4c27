"""The one git runner, repository discovery, the version check and ref helpers.

Every git invocation in orchard goes through `_git`: an argv list (never a shell string), an allowlisted
environment (not orchard's own: no inherited GIT_DIR & co., no credentials, no terminal prompts, C locale, no system
config or attributes, no replace refs, no optional index locks), hardening `-c` options that a repository's config
cannot override (no hooks, no fsmonitor, no attributes file, no automatic gc), stdin closed unless input is given,
its own process group and a time limit (`ORCHARD_GIT_TIMEOUT`). Unexpected failures raise `GitError`; a git that
ran too long or was killed by `kill_running_git` raises `GitTimeout`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from orchard.errors import EnvironmentProblem, GitError, GitTimeout, RefProblem

# What git may see of orchard's environment: what it needs to find itself, the user's own (global) config and an
# identity. Everything else (GIT_DIR & co. that would redirect it, credentials, GIT_CONFIG_COUNT) stays out.
_PASSED_ENV = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "TMPDIR", "TZ", "XDG_CONFIG_HOME", "GIT_CONFIG_GLOBAL",
    "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_EXEC_PATH",
})
_FIXED_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
    "GIT_OPTIONAL_LOCKS": "0",
    "GIT_MERGE_AUTOEDIT": "no",
    "GIT_CONFIG_NOSYSTEM": "1",  # /etc/gitconfig is not the user's and not the repository's
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_NO_REPLACE_OBJECTS": "1",  # a planted refs/replace/* would swap the content orchard merges
    "GIT_PROTOCOL_FROM_USER": "0",
}
# Command-line config outranks every file, so a repository's config cannot turn these back on. Hooks point at a
# path nothing can be created under; filters and merge drivers need a definition in the config orchard owns (its
# own repository's) and attributes from the tree or orchard's `info/attributes`, never a global attributes file.
HARDENING = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "core.attributesFile=/dev/null",
    "-c", "core.untrackedCache=false",
    "-c", "submodule.recurse=false",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
    "-c", "protocol.allow=never",
    "-c", "protocol.file.allow=always",
)
_OID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
FALLBACK_IDENT = ("-c", "user.name=orchard", "-c", "user.email=orchard@localhost")
TIMEOUT_ENV = "ORCHARD_GIT_TIMEOUT"
DEFAULT_TIMEOUT = 600.0


# git's worktree administration is not safe to run concurrently: `worktree add` reads every entry of
# `.git/worktrees/` and fails on one that is half written. orchard serializes these calls within its process
# (and one live run per repository holds the repository lock).
ADMIN_LOCK = threading.RLock()


@dataclass(frozen=True)
class Repo:
    """A discovered repository: the user's checkout and the shared git directory."""

    root: Path
    git_dir: Path


# --- the runner --------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Child:
    """A live git process; `interrupted` once `kill_running_git` has killed it."""

    proc: subprocess.Popen[str]
    interrupted: bool = False


# Every live git child, so a hard interrupt can kill them all; the engine calls vcs from several worker threads.
_CHILDREN: set[_Child] = set()
_CHILDREN_LOCK = threading.Lock()
_KILLS = 0  # how many times `kill_running_git` ran: a git whose start straddles one is killed as it registers


def _git(
    where: Repo | Path,
    *args: str,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `git -C <where> <args>`; raise GitError on a non-zero exit when `check`, GitTimeout when it ran past
    `ORCHARD_GIT_TIMEOUT` seconds or was killed by `kill_running_git` (whatever `check` says)."""
    cwd = where.root if isinstance(where, Repo) else where
    argv = ["-C", str(cwd), *args]  # as errors show it; git itself gets the hardening options first
    limit = git_timeout()
    child = _spawn([*HARDENING, *argv], input, _git_env(env))
    try:
        out, err = _communicate(child.proc, input, limit, argv)
    finally:
        with _CHILDREN_LOCK:
            _CHILDREN.discard(child)
    if child.interrupted:
        raise GitTimeout(argv, -9, "killed: the run was interrupted")
    if check and child.proc.returncode != 0:
        raise GitError(argv, child.proc.returncode, err)
    return subprocess.CompletedProcess(["git", *argv], child.proc.returncode, out, err)


def git_timeout() -> float:
    """Seconds a git call may take: `ORCHARD_GIT_TIMEOUT` (unset or empty: 600), read on every call (a dict lookup
    and a float parse, so tests and a changed environment need no cache reset)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise EnvironmentProblem(f"{TIMEOUT_ENV}: expected a positive number of seconds, got {text!r}")
    return value


def _git_env(extra: dict[str, str] | None) -> dict[str, str]:
    """The allowlisted part of orchard's environment, plus orchard's fixed settings and `extra`."""
    full_env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV or k.startswith("LC_")}
    full_env.update(_FIXED_ENV)
    if extra:
        full_env.update(extra)
    return full_env


def _spawn(argv: list[str], input: str | None, env: dict[str, str]) -> _Child:
    """Start git in its own process group (so a kill reaches anything it starts) and register it."""
    with _CHILDREN_LOCK:
        kills = _KILLS
    try:
        proc = subprocess.Popen(
            ["git", *argv],
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="surrogateescape",
            env=env,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise EnvironmentProblem("git not found on PATH") from exc
    child = _Child(proc)
    with _CHILDREN_LOCK:
        _CHILDREN.add(child)
        # started while `kill_running_git` ran (spawning outside the lock keeps threads from queueing on it)
        if kills != _KILLS and _kill_group(proc):
            child.interrupted = True
    return child


def _communicate(proc: subprocess.Popen[str], input: str | None, limit: float, argv: list[str]) -> tuple[str, str]:
    """git's (stdout, stderr); past `limit` seconds, or on any exception here (Ctrl-C), the group is killed and
    reaped first, so no git outlives the call."""
    try:
        return proc.communicate(input, timeout=limit)
    except BaseException as exc:
        _kill_group(proc)
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise GitTimeout(argv, -9, f"timed out after {limit:g} s") from None
        raise


def _kill_group(proc: subprocess.Popen[str]) -> bool:
    """SIGKILL the process group git leads; False if it is gone already."""
    # The leader is reaped only by the thread running it, after which `returncode` is set: checking it first keeps
    # a recycled group id from being hit (the window left is the one `Popen.send_signal` accepts too).
    if proc.returncode is not None:
        return False
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def kill_running_git() -> int:
    """SIGKILL every git process group orchard is running (a hard interrupt); returns how many were killed.

    Each interrupted call raises `GitTimeout` ("killed: the run was interrupted") in its own thread."""
    global _KILLS
    killed = 0
    with _CHILDREN_LOCK:
        _KILLS += 1
        for child in _CHILDREN:
            if _kill_group(child.proc):
                child.interrupted = True
                killed += 1
    return killed


def is_oid(text: str) -> bool:
    """True if `text` is a full lowercase SHA-1 or SHA-256 object id."""
    return bool(_OID.match(text))



# --- environment -------------------------------------------------------------------------------------


def parse_git_version(text: str) -> tuple[int, int, int]:
    """Parse `git --version` output ("git version 2.39.5", "2.40.0.windows.1") into a triple."""
    match = _VERSION.search(text)
    if match is None:
        raise EnvironmentProblem(f"cannot parse git version from {text.strip()!r}")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def git_version() -> tuple[int, int, int]:
    """The installed git's version."""
    return parse_git_version(_git(Path("/"), "--version").stdout)


def require_git(min_version: tuple[int, int, int] = (2, 38, 0)) -> None:
    """Raise EnvironmentProblem unless git is installed and at least `min_version`."""
    found = git_version()
    if found < min_version:
        need = ".".join(map(str, min_version))
        have = ".".join(map(str, found))
        raise EnvironmentProblem(f"git {need} or newer is required, found git {have}")


def find_repo(start: Path) -> Repo:
    """Discover the repository containing `start` (a non-bare working tree)."""
    if not start.is_dir():
        raise EnvironmentProblem(f"not a git repository: {start} (no such directory)")
    proc = _git(start, "rev-parse", "--path-format=absolute", "--git-common-dir", "--is-inside-work-tree", check=False)
    if proc.returncode != 0:
        if "dubious ownership" in proc.stderr:
            raise EnvironmentProblem(proc.stderr.strip())
        raise EnvironmentProblem(f"not a git repository: {start}")
    git_dir, inside = proc.stdout.splitlines()[:2]
    if inside.strip() != "true":
        raise EnvironmentProblem(f"not inside a git working tree: {start} (bare repository or .git directory)")
    top = _git(start, "rev-parse", "--show-toplevel").stdout.strip()
    return Repo(root=Path(top), git_dir=Path(git_dir.strip()))


def init_repository(path: Path, branch: str) -> Repo:
    """Create a repository at `path` (made if missing) whose unborn first branch is `branch`."""
    validate_branch_name(Path("/"), branch)
    where = path.absolute()
    where.mkdir(parents=True, exist_ok=True)
    _git(where, "init", "-q", "-b", branch, "--", str(where))
    return find_repo(where)


def commit_ident_args(where: Repo | Path) -> tuple[str, ...]:
    """`-c` options giving orchard's fallback identity, or () when git already has one configured.

    Asked once per repository and process (a run's worktrees share their repository's configuration)."""
    key = str(where.git_dir if isinstance(where, Repo) else _common_dir(where))
    if key not in _IDENT_CACHE:
        ok = _git(where, "var", "GIT_COMMITTER_IDENT", check=False).returncode == 0
        _IDENT_CACHE[key] = () if ok else FALLBACK_IDENT
    return _IDENT_CACHE[key]


_IDENT_CACHE: dict[str, tuple[str, ...]] = {}


def admin_dir(worktree: Path) -> Path | None:
    """The private git directory a linked worktree's `.git` file names (`gitdir: …`), or None when `.git` is not
    such a file. Read without running git; the path is as written, not checked."""
    try:
        text = (worktree / ".git").read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return None
    return Path(text.removeprefix("gitdir:").strip()) if text.startswith("gitdir:") else None


def _common_dir(worktree: Path) -> Path:
    """The shared git directory of a worktree, read from its `.git` file without running git."""
    gitdir = admin_dir(worktree)
    if gitdir is None:
        return (worktree / ".git").resolve()
    commondir = gitdir / "commondir"
    if commondir.is_file():
        return (gitdir / commondir.read_text().strip()).resolve()
    return gitdir.resolve()


# --- refs --------------------------------------------------------------------------------------------


def branch_ref(name: str) -> str:
    """`refs/heads/<name>` for a branch name, or the name itself if it is already a full ref."""
    return name if name.startswith("refs/") else f"refs/heads/{name}"


def validate_branch_name(repo: Repo | Path, name: str) -> None:
    """Raise RefProblem unless `name` is a well-formed branch name."""
    if not name or name.startswith("-") or name.startswith("refs/"):
        raise RefProblem(f"invalid branch name '{name}'")
    if all(_plain_component(c) for c in name.split("/")):
        return  # orchard's own names (run and task ids) always are: no git process needed
    if _git(repo, "check-ref-format", f"refs/heads/{name}", check=False).returncode != 0:
        raise RefProblem(f"invalid branch name '{name}'")


_PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def _plain_component(part: str) -> bool:
    """A ref component made only of characters git never objects to, in an order it never objects to (a subset
    of what `git check-ref-format` accepts; anything else is left to git)."""
    return bool(_PLAIN.match(part)) and ".." not in part and not part.endswith((".", ".lock"))


def resolve_commit(repo: Repo | Path, ref: str) -> str:
    """Full sha of `ref^{commit}`; RefProblem if it names no commit."""
    if not ref or "\0" in ref or "\n" in ref:
        raise RefProblem(f"unknown ref '{ref}'")
    proc = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False)
    if proc.returncode != 0 or not is_oid(proc.stdout.strip()):
        raise RefProblem(f"unknown ref '{ref}'")
    return proc.stdout.strip()


def head_ref(repo: Repo) -> tuple[str | None, str]:
    """(checked-out branch name or None when detached, HEAD sha) of the user's checkout."""
    sym = _git(repo, "symbolic-ref", "-q", "HEAD", check=False)
    head = _git(repo, "rev-parse", "--verify", "--quiet", "HEAD", check=False)
    if head.returncode != 0:
        raise EnvironmentProblem(f"the repository at {repo.root} has no commits yet")
    full = sym.stdout.strip() if sym.returncode == 0 else ""
    branch = full.removeprefix("refs/heads/") if full.startswith("refs/heads/") else None
    return branch, head.stdout.strip()


def read_ref(repo: Repo | Path, full_ref: str) -> str | None:
    """The object id a full ref (`refs/...`) points at, or None if it does not exist."""
    if not full_ref.startswith("refs/"):
        proc = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", full_ref, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None
    out = _git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "--", full_ref).stdout
    for line in out.splitlines():
        oid, _, name = line.partition(" ")
        if name == full_ref:
            return oid
    return None


def list_branches(repo: Repo | Path, prefix: str) -> list[str]:
    """Branch names (without `refs/heads/`) under `prefix/`, e.g. every task branch of a run."""
    ref_prefix = branch_ref(prefix.rstrip("/")) + "/"
    out = _git(repo, "for-each-ref", "--format=%(refname)", "--", ref_prefix).stdout
    return [line.removeprefix("refs/heads/") for line in out.splitlines() if line.startswith(ref_prefix)]


def branch_exists(repo: Repo | Path, name: str) -> bool:
    """True if `refs/heads/<name>` exists."""
    return read_ref(repo, branch_ref(name)) is not None


def set_ref(repo: Repo | Path, full_ref: str, new: str, expected_old: str | None, message: str = "orchard", *,
            reflog: bool = False) -> bool:
    """Atomically move `full_ref` to `new` if it is at `expected_old` (None: must not exist); `reflog`: record the
    move in the ref's reflog, creating it (git then logs every later move of that ref too).

    Returns False when the ref was not at `expected_old` (lost a race); raises GitError otherwise.
    """
    old = expected_old if expected_old is not None else ""
    logged = ("--create-reflog",) if reflog else ()
    proc = _git(repo, "update-ref", *logged, "-m", message, "--", full_ref, new, old, check=False)
    if proc.returncode == 0:
        return True
    if read_ref(repo, full_ref) != expected_old:
        return False
    raise GitError(proc.args[1:], proc.returncode, proc.stderr)


def create_branch(repo: Repo | Path, name: str, commit: str, *, force: bool = False) -> None:
    """Create `refs/heads/<name>` at `commit` without checking it out (`force`: move it if it exists)."""
    validate_branch_name(repo, name)
    ref = branch_ref(name)
    if force:
        _git(repo, "update-ref", "-m", "orchard: reset branch", "--", ref, commit)
    elif not set_ref(repo, ref, commit, None, "orchard: create branch"):
        raise RefProblem(f"branch '{name}' already exists")


def delete_ref(repo: Repo | Path, full_ref: str) -> None:
    """Delete `full_ref` (`refs/...`) whatever worktree has it checked out; a missing ref is fine."""
    _git(repo, "update-ref", "-m", "orchard: delete", "-d", "--", full_ref)


def delete_branch(repo: Repo | Path, name: str) -> None:
    """Delete branch `name`; a missing branch is fine, one checked out in a worktree is an error."""
    with ADMIN_LOCK:  # `branch -D` scans the worktree list too
        if branch_exists(repo, name):
            _git(repo, "branch", "-D", "--", name)


def is_ancestor(repo: Repo | Path, a: str, b: str) -> bool:
    """True if commit `a` is an ancestor of (or equal to) commit `b`."""
    proc = _git(repo, "merge-base", "--is-ancestor", "--end-of-options", a, b, check=False)
    if proc.returncode not in (0, 1):
        raise GitError(proc.args[1:], proc.returncode, proc.stderr)
    return proc.returncode == 0


def tip_descending_from(repo: Repo | Path, full_ref: str, start: str) -> str | None:
    """The commit `full_ref` points at if it is `start` or descends from it; None if it is missing, not a commit, or
    not built on `start`. One git process when the tip is `start` or a child of it (an attempt's usual result)."""
    proc = _git(repo, "rev-list", "--parents", "-n", "1", "--end-of-options", full_ref, "--", check=False)
    fields = proc.stdout.split()
    if proc.returncode != 0 or not fields or not is_oid(fields[0]):
        return None
    head = fields[0]
    return head if head == start or start in fields[1:] or is_ancestor(repo, start, head) else None


def first_parent_log(repo: Repo | Path, old: str, new: str) -> list[tuple[str, str]]:
    """(sha, full message) of each commit on `new`'s first-parent line since `old`, newest first."""
    proc = _git(repo, "log", "--first-parent", "-z", "--format=%H%x00%B", "--end-of-options", f"{old}..{new}")
    # `-z` ends each entry with a NUL, and a commit message cannot hold one, so the fields alternate sha, message
    fields = proc.stdout.split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    pairs = list(zip(fields[::2], fields[1::2], strict=False))
    if len(fields) % 2 or not all(is_oid(sha) for sha, _ in pairs):
        raise GitError(proc.args[1:], proc.returncode, f"unexpected git log output: {proc.stdout[:200]!r}")
    return [(sha, message.rstrip("\n")) for sha, message in pairs]
