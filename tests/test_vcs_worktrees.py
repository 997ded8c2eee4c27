"""orchard.vcs.worktrees against real git: add / list / commit_all / reset / remove."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchard.errors import GitError
from orchard.testing import snapshot_checkout
from orchard.vcs import (
    Repo,
    add_worktree,
    commit_all,
    detach_head,
    find_repo,
    is_linked_worktree,
    list_worktrees,
    move_worktree,
    read_ref,
    remove_worktree,
    reset_worktree,
    worktree_branch,
)
from orchard.vcs.worktrees import parse_worktree_list
from tests.conftest import init_repo, sh


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """A fresh repository on `main` with one commit and a .gitignore, isolated from user config."""
    return find_repo(init_repo(tmp_path / "repo", {"a.txt": "a\n", ".gitignore": "*.log\nbuild/\n"}))


def test_add_list_remove(repo: Repo, tmp_path: Path) -> None:
    base = sh(repo.root, "rev-parse", "HEAD")
    before = snapshot_checkout(repo.root)
    wt = tmp_path / "wts" / "nested" / "t1"
    add_worktree(repo, wt, "orchard/t1", base)
    assert (wt / "a.txt").read_text() == "a\n"
    assert sh(wt, "rev-parse", "HEAD") == base
    assert read_ref(repo, "refs/heads/orchard/t1") == base
    infos = list_worktrees(repo)
    assert [i.path.resolve() for i in infos] == [repo.root.resolve(), wt.resolve()]
    assert infos[0].branch == "refs/heads/main"
    assert infos[1].branch == "refs/heads/orchard/t1"
    assert infos[1].head == base
    (wt / "dirty.txt").write_text("x")
    remove_worktree(repo, wt)
    assert not wt.exists()
    assert len(list_worktrees(repo)) == 1
    remove_worktree(repo, wt)  # already gone: fine
    assert snapshot_checkout(repo.root) == before


def test_remove_tolerates_deleted_directory(repo: Repo, tmp_path: Path) -> None:
    wt = tmp_path / "t2"
    add_worktree(repo, wt, "t2", "main")
    sh(repo.root, "worktree", "lock", str(wt))
    remove_worktree(repo, wt)  # locked: --force --force removes it anyway
    add_worktree(repo, wt, "t2", "main")  # -B: branch reused
    subprocess.run(["rm", "-rf", str(wt)], check=True)
    remove_worktree(repo, wt)
    assert len(list_worktrees(repo)) == 1
    stray = tmp_path / "stray"
    (stray / "sub").mkdir(parents=True)
    with pytest.raises(GitError):
        remove_worktree(repo, stray)  # not a worktree and not empty: refuse to delete it
    assert stray.exists()


def test_commit_all(repo: Repo, tmp_path: Path) -> None:
    wt = tmp_path / "t3"
    add_worktree(repo, wt, "t3", "main")
    assert commit_all(wt, "nothing") is False
    (wt / "a.txt").write_text("changed\n")
    (wt / "new.txt").write_text("new\n")
    (wt / "debug.log").write_text("ignored\n")
    (wt / "build").mkdir()
    (wt / "build" / "out.bin").write_text("ignored\n")
    assert commit_all(wt, "task t3: did things") is True
    files = sh(wt, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
    assert sorted(files) == [".gitignore", "a.txt", "new.txt"]
    assert sh(wt, "show", "HEAD:a.txt") == "changed"
    assert sh(wt, "log", "-1", "--format=%s") == "task t3: did things"
    assert commit_all(wt, "again") is False


def test_commit_all_after_agent_commits_and_with_failing_hook(repo: Repo, tmp_path: Path) -> None:
    wt = tmp_path / "t4"
    add_worktree(repo, wt, "t4", "main")
    (wt / "one.txt").write_text("1\n")
    sh(wt, "add", "one.txt")
    sh(wt, "commit", "-q", "-m", "agent commit")
    agent_head = sh(wt, "rev-parse", "HEAD")
    assert commit_all(wt, "nothing left") is False
    hook = repo.git_dir / "hooks" / "pre-commit"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    (wt / "two.txt").write_text("2\n")
    assert commit_all(wt, "rest") is True
    assert sh(wt, "rev-parse", "HEAD~1") == agent_head


def test_commit_all_without_identity(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")  # no identity anywhere
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "user.useConfigOnly")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "true")
    wt = tmp_path / "t5"
    add_worktree(repo, wt, "t5", "main")
    (wt / "x.txt").write_text("x\n")
    assert commit_all(wt, "anon") is True
    assert sh(wt, "log", "-1", "--format=%an <%ae>") == "orchard <orchard@localhost>"


def test_reset_worktree(repo: Repo, tmp_path: Path) -> None:
    base = sh(repo.root, "rev-parse", "HEAD")
    wt = tmp_path / "t6"
    add_worktree(repo, wt, "t6", base)
    (wt / "a.txt").write_text("attempt 1\n")
    commit_all(wt, "attempt 1")
    (wt / "a.txt").write_text("uncommitted\n")
    (wt / "junk.txt").write_text("junk\n")
    (wt / "build").mkdir()
    (wt / "build" / "cache").write_text("stale\n")
    reset_worktree(wt, "t6", base, keep_ignored=True)
    assert (wt / "build" / "cache").exists()
    reset_worktree(wt, "t6", base)
    assert sh(wt, "rev-parse", "HEAD") == base
    assert read_ref(repo, "refs/heads/t6") == base
    assert (wt / "a.txt").read_text() == "a\n"
    assert not (wt / "junk.txt").exists()
    assert not (wt / "build").exists()
    assert sh(wt, "status", "--porcelain", "--ignored") == ""


def test_parse_worktree_list() -> None:
    out = (
        "worktree /r\0HEAD " + "a" * 40 + "\0branch refs/heads/main\0\0"
        "worktree /r/wt\0HEAD " + "b" * 40 + "\0detached\0locked\0prunable gitdir file points nowhere\0\0"
        "worktree /bare\0bare\0\0"
    )
    main, wt, bare = parse_worktree_list(out)
    assert main.path == Path("/r") and main.branch == "refs/heads/main" and not main.locked
    assert wt.branch is None and wt.head == "b" * 40 and wt.locked and wt.prunable
    assert bare.bare and bare.head is None


def test_move_detach_and_what_counts_as_a_linked_worktree(repo: Repo, tmp_path: Path) -> None:
    base = sh(repo.root, "rev-parse", "HEAD")
    wt = tmp_path / "wts" / "one"
    add_worktree(repo, wt, "one", base)
    assert is_linked_worktree(repo, wt) and worktree_branch(wt) == "refs/heads/one"
    detach_head(wt)
    assert worktree_branch(wt) is None and sh(wt, "rev-parse", "HEAD") == base
    moved = tmp_path / "pool" / "deep" / "x"
    move_worktree(repo, wt, moved)
    assert not wt.exists() and is_linked_worktree(repo, moved)
    assert moved.resolve() in {w.path.resolve() for w in list_worktrees(repo)}
    assert not is_linked_worktree(repo, repo.root)  # the main checkout is not a linked worktree
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / ".git").write_text(f"gitdir: {repo.git_dir}\n")  # points at the main repository itself
    assert not is_linked_worktree(repo, fake)
    (fake / ".git").write_text((moved / ".git").read_text())  # borrows another worktree's record
    assert not is_linked_worktree(repo, fake)
    assert not is_linked_worktree(repo, tmp_path / "missing")
