"""orchard.vcs.merge and land against real git: checkout-free merges and landing onto the base branch."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchard.errors import GitError, LandRefused, RefProblem
from orchard.testing import snapshot_checkout
from orchard.vcs import (
    Repo,
    add_worktree,
    commit_all,
    create_branch,
    find_repo,
    land,
    merge_into,
    read_ref,
    set_ref,
)
from orchard.vcs.merge import merge_trees
from tests.conftest import init_repo, sh


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """A fresh repository on `main` with one commit, isolated from the user's git config."""
    return find_repo(init_repo(tmp_path / "repo", {"a.txt": "line1\nline2\nline3\n", "b.txt": "b\n"}))


def task_commit(repo: Repo, tmp_path: Path, name: str, files: dict[str, str], base: str = "main") -> str:
    """Make a worktree for task `name` off `base`, write `files`, commit, and return the commit."""
    wt = tmp_path / "wt" / name
    add_worktree(repo, wt, f"task/{name}", base)
    for path, text in files.items():
        (wt / path).write_text(text)
    assert commit_all(wt, f"task {name}")
    return sh(wt, "rev-parse", "HEAD")


def tree_bytes(root: Path, *, with_git: bool = True) -> dict[str, str]:
    """Hash of every file under `root`; .git is included except the parts merges legitimately change."""
    moving = {"objects", "worktrees", "refs", "logs"}
    result = {}
    for p in sorted(root.rglob("*")):
        parts = p.relative_to(root).parts
        if not p.is_file() or (parts[0] == ".git" and (not with_git or parts[1] in moving)):
            continue
        result["/".join(parts)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return result


def test_clean_merge_is_two_parent_commit_and_leaves_checkout_alone(repo: Repo, tmp_path: Path) -> None:
    base = sh(repo.root, "rev-parse", "HEAD")
    create_branch(repo, "orchard/integration", base)
    one = task_commit(repo, tmp_path, "one", {"a.txt": "LINE1\nline2\nline3\n"})
    two = task_commit(repo, tmp_path, "two", {"a.txt": "line1\nline2\nLINE3\n", "c.txt": "c\n"})
    (repo.root / "user-wip.txt").write_text("untracked user work\n")
    (repo.root / "b.txt").write_text("user edit\n")
    snap, files = snapshot_checkout(repo.root), tree_bytes(repo.root)

    first = merge_into(repo, "orchard/integration", one, "merge one")
    assert first.status == "merged" and first.conflicts == ()
    second = merge_into(repo, "refs/heads/orchard/integration", two, "merge two", expected_tip=first.commit)
    assert second.status == "merged"
    assert read_ref(repo, "refs/heads/orchard/integration") == second.commit
    assert sh(repo.root, "rev-list", "--parents", "-n1", str(second.commit)).split()[1:] == [
        str(first.commit),
        two,
    ]
    assert sh(repo.root, "show", f"{second.commit}:a.txt") == "LINE1\nline2\nLINE3"
    assert sh(repo.root, "show", f"{second.commit}:c.txt") == "c"
    assert sh(repo.root, "log", "-1", "--format=%s", str(second.commit)) == "merge two"

    assert snapshot_checkout(repo.root) == snap
    assert tree_bytes(repo.root) == files
    assert sh(repo.root, "rev-parse", "HEAD") == base

    again = merge_into(repo, "orchard/integration", two, "merge two again")
    assert again.status == "already" and again.commit == second.commit
    assert read_ref(repo, "refs/heads/orchard/integration") == second.commit


def test_conflict_returns_paths_and_moves_nothing(repo: Repo, tmp_path: Path) -> None:
    create_branch(repo, "integ", sh(repo.root, "rev-parse", "HEAD"))
    one = task_commit(repo, tmp_path, "one", {"a.txt": "one\n", "b.txt": "one\n"})
    two = task_commit(repo, tmp_path, "two", {"a.txt": "two\n", "b.txt": "two\n", "ok.txt": "ok\n"})
    tip = merge_into(repo, "integ", one, "merge one").commit
    result = merge_into(repo, "integ", two, "merge two")
    assert result.status == "conflict" and result.commit is None
    assert result.conflicts == ("a.txt", "b.txt")
    assert read_ref(repo, "refs/heads/integ") == tip
    assert merge_trees(repo, str(tip), two).conflicts == ("a.txt", "b.txt")


def test_merge_errors(repo: Repo, tmp_path: Path) -> None:
    base = sh(repo.root, "rev-parse", "HEAD")
    create_branch(repo, "integ", base)
    one = task_commit(repo, tmp_path, "one", {"x.txt": "x\n"})
    other = task_commit(repo, tmp_path, "other", {"y.txt": "y\n"})
    assert set_ref(repo, "refs/heads/integ", other, base)  # someone moved the ref behind our back
    with pytest.raises(GitError, match="moved"):
        merge_into(repo, "integ", one, "m", expected_tip=base)
    with pytest.raises(RefProblem, match="unknown ref"):
        merge_into(repo, "nope", one, "m")
    with pytest.raises(GitError):
        merge_into(repo, "integ", "f" * 40, "m")


def test_land_fast_forward_into_clean_checkout(repo: Repo, tmp_path: Path) -> None:
    create_branch(repo, "integ", sh(repo.root, "rev-parse", "HEAD"))
    one = task_commit(repo, tmp_path, "one", {"new.txt": "new\n"})
    merged = merge_into(repo, "integ", one, "merge one").commit
    (repo.root / "new.txt").write_text("untracked, would be overwritten\n")
    with pytest.raises(LandRefused, match="refused") as caught:
        land(repo, "integ", "main")
    assert caught.value.exit_code == 2
    assert (repo.root / "new.txt").read_text() == "untracked, would be overwritten\n"
    (repo.root / "new.txt").unlink()
    (repo.root / "untracked.txt").write_text("fine\n")
    assert land(repo, "integ", "main") == "fast-forward"
    assert sh(repo.root, "rev-parse", "HEAD") == merged
    assert (repo.root / "new.txt").read_text() == "new\n"
    assert sh(repo.root, "status", "--porcelain") == "?? untracked.txt"
    assert land(repo, "integ", "main") == "up-to-date"


def test_land_merge_into_checkout_and_conflict_abort(repo: Repo, tmp_path: Path) -> None:
    create_branch(repo, "integ", sh(repo.root, "rev-parse", "HEAD"))
    one = task_commit(repo, tmp_path, "one", {"a.txt": "task\n", "new.txt": "n\n"})
    merge_into(repo, "integ", one, "merge one")
    (repo.root / "b.txt").write_text("user moved on\n")
    sh(repo.root, "commit", "-q", "-am", "user work")
    assert land(repo, "integ", "main") == "merged"
    assert sh(repo.root, "rev-list", "--parents", "-n1", "HEAD").count(" ") == 2
    assert (repo.root / "new.txt").exists()

    two = task_commit(repo, tmp_path, "two", {"b.txt": "task two\n"}, base="main~1")
    merge_into(repo, "integ", two, "merge two")
    (repo.root / "b.txt").write_text("user again\n")
    sh(repo.root, "commit", "-q", "-am", "user conflicting work")
    snap, files = snapshot_checkout(repo.root), tree_bytes(repo.root, with_git=False)
    stage = sh(repo.root, "ls-files", "--stage")
    with pytest.raises(LandRefused, match=r"conflicts in: b\.txt"):
        land(repo, "integ", "main")
    # The aborted merge rewrote the index file (same entries, new stat data), so compare entries.
    assert {**snapshot_checkout(repo.root), "index_sha256": None} == {**snap, "index_sha256": None}
    assert sh(repo.root, "ls-files", "--stage") == stage
    assert tree_bytes(repo.root, with_git=False) == files


def test_land_refuses_dirty_checkout(repo: Repo, tmp_path: Path) -> None:
    create_branch(repo, "integ", sh(repo.root, "rev-parse", "HEAD"))
    one = task_commit(repo, tmp_path, "one", {"new.txt": "new\n"})
    merge_into(repo, "integ", one, "merge one")
    (repo.root / "a.txt").write_text("dirty\n")
    (repo.root / "b.txt").write_text("staged\n")
    sh(repo.root, "add", "b.txt")
    snap, files = snapshot_checkout(repo.root), tree_bytes(repo.root)
    with pytest.raises(LandRefused, match=r"uncommitted changes \(a\.txt, b\.txt\); commit or stash"):
        land(repo, "integ", "main")
    assert snapshot_checkout(repo.root) == snap
    assert tree_bytes(repo.root) == files


def test_land_when_base_not_checked_out_moves_ref_only(repo: Repo, tmp_path: Path) -> None:
    start = sh(repo.root, "rev-parse", "HEAD")
    create_branch(repo, "release", start)
    create_branch(repo, "integ", start)
    one = task_commit(repo, tmp_path, "one", {"new.txt": "new\n"})
    tip = merge_into(repo, "integ", one, "merge one").commit
    snap, files = snapshot_checkout(repo.root), tree_bytes(repo.root)
    assert land(repo, "integ", "release") == "fast-forward"
    assert read_ref(repo, "refs/heads/release") == tip
    assert snapshot_checkout(repo.root) == snap
    assert tree_bytes(repo.root) == files

    side = task_commit(repo, tmp_path, "side", {"side.txt": "s\n"}, base=start)
    assert set_ref(repo, "refs/heads/release", side, tip)
    assert land(repo, "integ", "release") == "merged"
    assert sh(repo.root, "show", "release:new.txt") == "new"
    assert sh(repo.root, "show", "release:side.txt") == "s"
    assert snapshot_checkout(repo.root) == snap


def test_land_refuses_base_checked_out_elsewhere(repo: Repo, tmp_path: Path) -> None:
    start = sh(repo.root, "rev-parse", "HEAD")
    create_branch(repo, "integ", start)
    create_branch(repo, "release", start)
    one = task_commit(repo, tmp_path, "one", {"new.txt": "new\n"})
    merge_into(repo, "integ", one, "merge one")
    sh(repo.root, "worktree", "add", "-q", str(tmp_path / "elsewhere"), "release")
    with pytest.raises(LandRefused, match="checked out in another worktree"):
        land(repo, "integ", "release")
    assert read_ref(repo, "refs/heads/release") == start
    with pytest.raises(RefProblem, match="unknown ref"):
        land(repo, "missing", "main")


def test_conflict_kinds_and_odd_names(repo: Repo, tmp_path: Path) -> None:
    odd = "dir with space/ünï\tcode.txt"
    (repo.root / "dir with space").mkdir()
    (repo.root / odd).write_text("base\n")
    sh(repo.root, "add", "-A")
    sh(repo.root, "commit", "-q", "-m", "odd")
    create_branch(repo, "integ", sh(repo.root, "rev-parse", "HEAD"))
    wt = tmp_path / "wt" / "del"
    add_worktree(repo, wt, "task/del", "main")
    (wt / "b.txt").unlink()
    (wt / odd).write_text("deleter\n")
    (wt / "added.txt").write_text("one\n")
    assert commit_all(wt, "delete b")
    other = task_commit(repo, tmp_path, "mod", {"b.txt": "modified\n", odd: "mod\n", "added.txt": "two\n"})
    assert merge_into(repo, "integ", sh(wt, "rev-parse", "HEAD"), "m").status == "merged"
    result = merge_into(repo, "integ", other, "m2")
    assert result.status == "conflict"
    assert sorted(result.conflicts) == sorted(["added.txt", "b.txt", odd])


def _half_landed(repo: Repo, tmp_path: Path, files: int) -> tuple[str, str, Path]:
    """What `kill -9` of a land leaves: a move of the checkout from main's tip to the integration tip cut short
    (some new files written, one created but empty, the index locked, the branch not moved) and its marker.
    Returns (old, new, marker)."""
    old = sh(repo.root, "rev-parse", "HEAD")
    new = task_commit(repo, tmp_path, "big", {"a.txt": "changed\n", **{f"f{i}.txt": f"{i}\n" for i in range(files)}})
    create_branch(repo, "integ", new)
    marker = tmp_path / "land.json"
    marker.write_text(json.dumps({"ref": "refs/heads/main", "old": old, "new": new, "result": "fast-forward",
                                  "pid": _dead_pid(), "started": time.time() - 5}))
    for i in range(files // 2):
        (repo.root / f"f{i}.txt").write_text(f"{i}\n")
    (repo.root / f"f{files // 2}.txt").write_text("")
    (repo.root / "a.txt").write_text("changed\n")
    (repo.root / ".git" / "index.lock").write_text("")
    return old, new, marker


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_land_killed_half_way_is_finished_by_the_next(repo: Repo, tmp_path: Path) -> None:
    (repo.root / "mine.txt").write_text("the user's own untracked file\n")
    _, new, marker = _half_landed(repo, tmp_path, 40)
    assert land(repo, "integ", "main", marker=marker) == "fast-forward"
    assert sh(repo.root, "rev-parse", "HEAD") == new
    assert sh(repo.root, "status", "--porcelain", "--untracked-files=all") == "?? mine.txt"
    assert not (repo.root / ".git" / "index.lock").exists() and not marker.exists()
    assert (repo.root / "f39.txt").read_text() == "39\n" and (repo.root / "f20.txt").read_text() == "20\n"
    assert land(repo, "integ", "main", marker=marker) == "up-to-date"


def test_a_half_done_land_with_changes_of_the_users_since_is_left_alone(repo: Repo, tmp_path: Path) -> None:
    old, _, marker = _half_landed(repo, tmp_path, 10)
    (repo.root / "b.txt").write_text("the user edited this after the crash\n")
    (repo.root / "f9.txt").write_text("and wrote this where the land would\n")
    files = tree_bytes(repo.root, with_git=False)
    with pytest.raises(LandRefused, match=r"not part of it \(b\.txt, f9\.txt\)"):
        land(repo, "integ", "main", marker=marker)
    assert tree_bytes(repo.root, with_git=False) == files and marker.exists()
    assert sh(repo.root, "rev-parse", "HEAD") == old


def test_kill_9_of_a_land_moving_a_big_checkout_then_land_again_leaves_it_clean(repo: Repo, tmp_path: Path) -> None:
    old = sh(repo.root, "rev-parse", "HEAD")
    new = task_commit(repo, tmp_path, "big", {f"f{i:04}.txt": f"{i}\n" * 50 for i in range(3000)})
    create_branch(repo, "integ", new)
    marker = tmp_path / "land.json"
    code = ("import sys; from pathlib import Path; from orchard.vcs import find_repo, land; "
            "land(find_repo(Path(sys.argv[1])), 'integ', 'main', marker=Path(sys.argv[2]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(repo.root), str(marker)], start_new_session=True)
    while proc.poll() is None and not (repo.root / "f0000.txt").exists():
        time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: orchard and its git, as an OOM kill or a closed terminal
    proc.wait()
    half_done = sh(repo.root, "rev-parse", "HEAD") == old
    assert land(repo, "integ", "main", marker=marker) == "fast-forward"
    assert sh(repo.root, "rev-parse", "HEAD") == new
    assert sh(repo.root, "status", "--porcelain", "--untracked-files=all") == ""
    assert not (repo.root / ".git" / "index.lock").exists() and not marker.exists()
    assert half_done, "the kill came after the land had finished: the test did not test the interruption"
