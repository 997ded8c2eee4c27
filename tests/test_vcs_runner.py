"""orchard.vcs.git's runner with real git and real processes: the time limit, the kill on interrupt, the limit's
validation, and the scrubbing of variables that would point git at another repository."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchard.errors import EnvironmentProblem, GitTimeout
from orchard.vcs import Repo, commit_all, create_branch, find_repo, kill_running_git, read_ref, resolve_commit
from orchard.vcs.git import git_timeout
from orchard.vcs.merge import merge_trees
from tests.conftest import git, init_repo, sh

# A stand-in for git: the real one for everything but `merge-tree`, which hangs in a child `sleep`. It records its
# own pid and the sleeper's (atomically, by a rename), so a test can wait for it and then see the whole group die.
FAKE_GIT = """#!/bin/sh
for arg in "$@"; do
  if [ "$arg" = merge-tree ]; then
    sleep 60 &
    echo "$$ $!" > "{pids}.tmp" && mv "{pids}.tmp" "{pids}"
    wait
    exit 0
  fi
done
exec "{real}" "$@"
"""


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """A repository whose `main` has moved on from branch `side`, so there is something to merge."""
    repo = find_repo(init_repo(tmp_path / "repo", {"a.txt": "a\n"}))
    create_branch(repo, "side", sh(repo.root, "rev-parse", "HEAD"))
    (repo.root / "b.txt").write_text("b\n")
    sh(repo.root, "add", "b.txt")
    sh(repo.root, "commit", "-q", "-m", "b")
    return repo


@pytest.fixture
def hanging_merge_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The fake git first on PATH; yields the file its hanging `merge-tree` writes its pids to."""
    real = shutil.which("git")
    assert real is not None
    pids = tmp_path / "merge-tree.pids"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "git"
    fake.write_text(FAKE_GIT.format(pids=pids, real=real))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    yield pids
    for pid in read_pids(pids):  # a failed test must not leave a sleeper behind
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def read_pids(path: Path) -> list[int]:
    """The pids the fake git wrote (its shell, then its sleeping child), none before it wrote them."""
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """True while `pid` has not exited (an exited child its new parent has not reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_git_past_its_time_limit_is_killed_with_its_group(repo: Repo, hanging_merge_tree: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHARD_GIT_TIMEOUT", "1")
    started = time.monotonic()
    with pytest.raises(GitTimeout, match=r"timed out after 1 s") as caught:
        merge_trees(repo, "main", "side")
    assert time.monotonic() - started < 15
    assert caught.value.returncode == -9 and "merge-tree" in caught.value.argv
    pids = read_pids(hanging_merge_tree)
    assert len(pids) == 2, "the fake git never got to its merge-tree"
    assert eventually(lambda: not any(alive(pid) for pid in pids)), pids


def test_kill_running_git_interrupts_a_call_in_another_thread(repo: Repo, hanging_merge_tree: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHARD_GIT_TIMEOUT", "300")
    raised: list[BaseException] = []

    def merge() -> None:
        try:
            merge_trees(repo, "main", "side")
        except BaseException as exc:  # handed to the test thread
            raised.append(exc)

    worker = threading.Thread(target=merge)
    worker.start()
    try:
        assert eventually(hanging_merge_tree.exists), "the fake git never got to its merge-tree"
        assert kill_running_git() >= 1
        worker.join(timeout=10)
        assert not worker.is_alive()
    finally:
        kill_running_git()  # never leave the worker hanging on a failed assertion
        worker.join(timeout=10)
    assert len(raised) == 1 and isinstance(raised[0], GitTimeout), raised
    assert "killed: the run was interrupted" in str(raised[0])
    pids = read_pids(hanging_merge_tree)
    assert eventually(lambda: not any(alive(pid) for pid in pids)), pids
    assert kill_running_git() == 0  # nothing of that call is left registered


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan", "inf", "1e999"])
def test_a_bad_time_limit_is_an_environment_problem(repo: Repo, monkeypatch: pytest.MonkeyPatch,
                                                    value: str) -> None:
    monkeypatch.setenv("ORCHARD_GIT_TIMEOUT", value)
    with pytest.raises(EnvironmentProblem, match=f"ORCHARD_GIT_TIMEOUT.*{value!r}") as caught:
        read_ref(repo, "refs/heads/main")
    assert caught.value.exit_code == 3


def test_the_time_limit_is_read_on_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCHARD_GIT_TIMEOUT", raising=False)
    assert git_timeout() == 600
    monkeypatch.setenv("ORCHARD_GIT_TIMEOUT", " 2.5 ")
    assert git_timeout() == 2.5
    monkeypatch.setenv("ORCHARD_GIT_TIMEOUT", "")
    assert git_timeout() == 600


def test_git_dir_and_work_tree_from_the_environment_are_ignored(repo: Repo, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A GIT_DIR / GIT_WORK_TREE inherited from the caller (a git hook, an IDE) must not send orchard's git calls
    to another repository."""
    other = init_repo(tmp_path / "other", {"z.txt": "z\n"})
    head, side = sh(repo.root, "rev-parse", "HEAD"), sh(repo.root, "rev-parse", "side")
    other_before = (git(other, "for-each-ref"), git(other, "status", "--porcelain", "--ignored"))
    (repo.root / "c.txt").write_text("c\n")
    with monkeypatch.context() as env:
        env.setenv("GIT_DIR", str(other / ".git"))
        env.setenv("GIT_WORK_TREE", str(other))
        assert read_ref(repo, "refs/heads/main") == head
        assert read_ref(repo, "refs/heads/side") == side  # a branch the other repository does not have
        assert resolve_commit(repo, "HEAD") == head
        assert commit_all(repo.root, "scrubbed") is True
    assert sh(repo.root, "rev-parse", "HEAD~1") == head
    assert sh(repo.root, "show", "HEAD:c.txt") == "c"
    assert (git(other, "for-each-ref"), git(other, "status", "--porcelain", "--ignored")) == other_before
