"""Shared fixtures: real git repositories in temp dirs, plans on disk, and the real CLI as a child process."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchard.testing import FakeModelServer

pytest_plugins = ("tests.browser",)  # the `browser` fixture: headless Chromium (tests/browser.py)

FAKE_AGENT = Path(__file__).parent / "agents" / "fake_agent.py"
PYTHON = sys.executable


def _tests_root(system_tmp: Path) -> Path:
    """Where the tests' temporary files go: `orchard-tests-<uid>` in the temp dir, in /var/tmp when that is under
    /tmp; for tests run by the tests (their TMPDIR is already `…/orchard-tests-<uid>/tmp`), the same place."""
    name = f"orchard-tests-{os.getuid()}"
    if system_tmp.name == "tmp" and system_tmp.parent.name == name:
        return system_tmp.parent
    return (Path("/var/tmp") if system_tmp.parts[:2] == ("/", "tmp") else system_tmp) / name


# Agents run in bubblewrap (`sandbox: auto`), whose /tmp is a private tmpfs: the tests' repositories, scripts and
# plans live elsewhere so that a sandboxed agent sees them (read-only) as it would see a user's project.
_TESTS_ROOT = _tests_root(Path(tempfile.gettempdir()).resolve())
# What the tests prepare for the agents' own sandboxes (a copy of codex's bubblewrap) lives beside the tests' TMPDIR,
# not in it: codex's sandbox lets commands write in $TMPDIR and /tmp, and codex runs no bwrap from such places.
TOOLS = _TESTS_ROOT / "tools"
for _folder in (_TESTS_ROOT, _TESTS_ROOT / "tmp", TOOLS):
    _folder.mkdir(mode=0o700, exist_ok=True)
os.environ["TMPDIR"] = str(_TESTS_ROOT / "tmp")
tempfile.tempdir = None  # `gettempdir` caches its answer
# The one place the fake agent's rendezvous (`@barrier`, `@touch` of shared markers) may write from inside the
# sandbox: each agent entry of the tests lists it in `writable`.
RENDEZVOUS = Path(tempfile.mkdtemp(prefix="orchard-rendezvous-"))
atexit.register(shutil.rmtree, RENDEZVOUS, ignore_errors=True)


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` (tests only) and return stdout."""
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def run_processes(run_id: str) -> list[int]:
    """Live processes started for a run (they carry ORCHARD_RUN_ID in their environment)."""
    return _agent_processes(lambda env: env.get("ORCHARD_RUN_ID") == run_id)


def _agent_processes(match: Callable[[dict[str, str]], bool]) -> list[int]:
    """Live processes whose environment `match` accepts."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if match(proc.environ()) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def query(repo: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows straight from a repository's state store, read-only; none before the file or its schema exists."""
    db = repo / ".orchard" / "state.db"
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        try:
            return list(conn.execute(sql, args).fetchall())
        except sqlite3.OperationalError as exc:  # a run that is still writing its first schema
            if "no such table" in str(exc):
                return []
            raise


def wait_for(predicate: Callable[[], bool], what: str = "condition", timeout: float = 30.0) -> None:
    """Poll `predicate` (a rendezvous: a file, a log line, a journal row) until true; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout:.0f} s"
        time.sleep(0.02)


def merged_tasks(repo: Path, ref: str) -> list[tuple[str, str]]:
    """(merge commit, task id) of each merge on `ref`'s first-parent line, newest first, by `Orchard-Task` trailer."""
    log = git(repo, "log", "--first-parent", "--format=%H %(trailers:key=Orchard-Task,valueonly,separator=)", ref)
    return [(fields[0], fields[1]) for fields in (line.split() for line in log.splitlines()) if len(fields) == 2]


def own_git(repo: Path) -> Path:
    """orchard's own repository beside the user's (where task worktrees and task branches live)."""
    return repo / ".orchard" / "git"


def task_links(repo: Path) -> dict[Path, Path]:
    """The pool directory each task's link (`.orchard/worktrees/<run>/<task>`) leads to, by link."""
    links = repo / ".orchard" / "worktrees"
    return {link: link.resolve() for run in (links.iterdir() if links.is_dir() else ()) for link in run.iterdir()
            if link.is_symlink()}


def parked_worktrees(repo: Path) -> list[Path]:
    """The linked worktrees of orchard's repository that no task holds, each checked to be a reusable one parked in
    `.orchard/pool/` on a detached HEAD (no branch held, nothing of a task's left); a worktree anywhere else, or any
    worktree registered in the user's repository, fails the calling test."""
    assert git(repo, "worktree", "list", "--porcelain", "-z").count("worktree ") == 1, "a worktree in the user's repo"
    records = git(own_git(repo), "worktree", "list", "--porcelain", "-z").split("\0\0")
    pool = (repo / ".orchard" / "pool").resolve()
    held = set(task_links(repo).values())
    parked = []
    for record in records[1:]:  # the first is orchard's bare repository itself
        fields = dict(item.partition(" ")[::2] for item in record.split("\0") if item)
        if "worktree" not in fields:
            continue
        path = Path(fields["worktree"])
        assert path.parent == pool, f"a worktree outside the pool: {fields}"
        if path in held:  # kept for inspection
            continue
        assert "detached" in fields, f"a worktree left behind on a branch: {fields}"
        assert git(path, "status", "--porcelain", "--ignored") == "", f"a parked worktree is not clean: {path}"
        parked.append(path)
    on_disk = {p.resolve() for p in pool.iterdir()} - held if pool.is_dir() else set()
    assert on_disk == set(parked), f"pool directories git does not know: {on_disk - set(parked)}"
    return parked


def sh(cwd: Path, *args: str) -> str:
    """Run git in `cwd` for test setup and return its stripped stdout."""
    return git(cwd, *args).strip()


def init_repo(root: Path, files: dict[str, str]) -> Path:
    """A repository at `root` on branch main whose first commit holds `files`."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system git config leaks in; a fixed identity for test commits."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig"))
    (home / "gitconfig").write_text("[user]\n\tname = Test User\n\temail = test@example.invalid\n")


VENDOR_PREFIXES = ("ANTHROPIC_", "CLAUDE_", "OPENAI_", "CODEX_", "IS_SANDBOX")


@pytest.fixture
def no_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a plan's (or an agents file's) entries may point an agent CLI anywhere: the fake server on loopback."""
    for name in list(os.environ):
        if name.startswith(VENDOR_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture
def server() -> Iterator[FakeModelServer]:
    """A scripted fake model server on loopback (`orchard.testing.FakeModelServer`)."""
    with FakeModelServer() as fake:
        yield fake


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository on branch main with one commit (README.md, .gitignore)."""
    return init_repo(tmp_path / "repo", {"README.md": "# test repo\n", ".gitignore": "__pycache__/\n*.pyc\n"})


def agent_block(name: str = "fake", max_parallel: int | None = None, extra: str = "") -> str:
    """YAML for a command agent running the scripted fake agent."""
    limit = f", max_parallel: {max_parallel}" if max_parallel else ""
    shared = f', env: {{FAKE_AGENT_RENDEZVOUS: "{RENDEZVOUS}"}}, writable: ["{RENDEZVOUS}"]'
    return (f'  {name}: {{type: command, command: ["{PYTHON}", "{FAKE_AGENT}", "{{prompt_file}}"]{limit}{shared}'
            f'{extra}}}\n')


@pytest.fixture
def write_plan(tmp_path: Path) -> Callable[[str], Path]:
    """Write plan YAML (outside the repository) and return its path."""

    def write(text: str, name: str = "plan.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def ndjson(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


def run_orchard(*args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None) -> Result:
    """The real CLI in a child process."""
    proc = subprocess.run([PYTHON, "-m", "orchard", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def orchard(repo: Path) -> Callable[..., Result]:
    """`orchard(*args)` runs the CLI in the test repository."""

    def call(*args: str, cwd: Path | None = None, timeout: float = 120) -> Result:
        return run_orchard(*args, cwd=cwd or repo, timeout=timeout)

    return call


@pytest.fixture
def background(repo: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """`background(*args)` starts `orchard ARGS` in the repository with piped output; whatever still runs when the
    test ends is killed and reaped, so a failed test leaves no process or open pipe behind."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([PYTHON, "-m", "orchard", *args], cwd=repo, text=True, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    for pid in _agent_processes(lambda env: env.get("ORCHARD_WORKTREE", "").startswith(str(repo))):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
