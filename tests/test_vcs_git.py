"""orchard.vcs.git: discovery, version, refs, exclude, the first-parent log — against real git in tmp repos."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchard.errors import EnvironmentProblem, RefProblem
from orchard.testing import snapshot_checkout
from orchard.vcs import (
    Repo,
    branch_exists,
    create_branch,
    delete_branch,
    delete_ref,
    find_repo,
    first_parent_log,
    git_version,
    head_ref,
    init_repository,
    is_ancestor,
    merge_into,
    read_ref,
    require_git,
    resolve_commit,
    set_ref,
    tip_descending_from,
    validate_branch_name,
)
from orchard.vcs.git import parse_git_version
from tests.conftest import init_repo, sh


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """A fresh repository on `main` with one commit, isolated from the user's git config."""
    return find_repo(init_repo(tmp_path / "repo", {"a.txt": "a\n"}))


def commit_file(root: Path, name: str, text: str) -> str:
    """Write and commit one file in the checkout at `root`; return the new HEAD."""
    (root / name).write_text(text)
    sh(root, "add", "--", name)
    sh(root, "commit", "-q", "-m", f"write {name}")
    return sh(root, "rev-parse", "HEAD")


def test_find_repo_from_subdirectory(repo: Repo) -> None:
    sub = repo.root / "deep" / "er"
    sub.mkdir(parents=True)
    found = find_repo(sub)
    assert found == repo
    assert found.git_dir == (repo.root / ".git").resolve()
    assert found.git_dir.is_absolute()


def test_find_repo_on_non_repo_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(EnvironmentProblem, match="not a git repository"):
        find_repo(plain)
    with pytest.raises(EnvironmentProblem, match="not a git repository"):
        find_repo(tmp_path / "missing")


def test_version_parsing_and_requirement() -> None:
    assert parse_git_version("git version 2.39.5\n") == (2, 39, 5)
    assert parse_git_version("git version 2.40.0.windows.1") == (2, 40, 0)
    assert parse_git_version("git version 2.45") == (2, 45, 0)
    with pytest.raises(EnvironmentProblem):
        parse_git_version("nonsense")
    assert git_version() >= (2, 38, 0)
    require_git()
    with pytest.raises(EnvironmentProblem, match=r"git 99\.0\.0 or newer is required, found git \d+\.\d+"):
        require_git((99, 0, 0))


def test_require_git_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnvironmentProblem, match="git not found"):
        require_git()


def test_resolve_and_head(repo: Repo) -> None:
    head = sh(repo.root, "rev-parse", "HEAD")
    assert resolve_commit(repo, "main") == head
    assert resolve_commit(repo, "HEAD") == head
    assert head_ref(repo) == ("main", head)
    for bad in ("nope", "--output=x", ""):
        with pytest.raises(RefProblem, match="unknown ref") as caught:
            resolve_commit(repo, bad)
        assert caught.value.exit_code == 2
    sh(repo.root, "checkout", "-q", "--detach")
    assert head_ref(repo) == (None, head)


def test_branch_lifecycle_and_set_ref(repo: Repo) -> None:
    base = sh(repo.root, "rev-parse", "HEAD")
    assert not branch_exists(repo, "feature")
    create_branch(repo, "feature", base)
    assert branch_exists(repo, "feature")
    assert read_ref(repo, "refs/heads/feature") == base
    assert read_ref(repo, "refs/heads/feat") is None  # no prefix matching
    with pytest.raises(RefProblem, match="already exists"):
        create_branch(repo, "feature", base)
    with pytest.raises(RefProblem, match="invalid branch name"):
        create_branch(repo, "-x", base)
    with pytest.raises(RefProblem, match="invalid branch name"):
        create_branch(repo, "a..b", base)

    second = commit_file(repo.root, "b.txt", "b\n")
    assert not set_ref(repo, "refs/heads/feature", second, second)  # wrong expected old: a lost race
    assert read_ref(repo, "refs/heads/feature") == base
    assert set_ref(repo, "refs/heads/feature", second, base)
    assert read_ref(repo, "refs/heads/feature") == second
    assert not set_ref(repo, "refs/heads/feature", base, None)  # None means "must not exist"
    create_branch(repo, "feature", base, force=True)
    assert read_ref(repo, "refs/heads/feature") == base

    delete_branch(repo, "feature")
    delete_branch(repo, "feature")  # missing is fine
    assert not branch_exists(repo, "feature")


def test_ancestry(repo: Repo) -> None:
    first = sh(repo.root, "rev-parse", "HEAD")
    sh(repo.root, "mv", "a.txt", "renamed.txt")
    sh(repo.root, "commit", "-q", "-m", "rename")
    second = commit_file(repo.root, "new.txt", "n\n")
    assert is_ancestor(repo, first, second)
    assert is_ancestor(repo, second, second)
    assert not is_ancestor(repo, second, first)
    changed = sh(repo.root, "diff-tree", "-r", "--name-only", "--no-renames", first, second).splitlines()
    assert sorted(changed) == ["a.txt", "new.txt", "renamed.txt"]


def test_snapshot_sees_changes(repo: Repo) -> None:
    """The tests' own `snapshot_checkout` helper notices what the "untouched" assertions rely on."""
    before = snapshot_checkout(repo.root)
    assert before == snapshot_checkout(repo.root)
    assert before["head_ref"] == "refs/heads/main"
    (repo.root / "untracked.txt").write_text("u")
    assert snapshot_checkout(repo.root)["status"] != before["status"]
    sh(repo.root, "add", "untracked.txt")
    assert snapshot_checkout(repo.root)["index_sha256"] != before["index_sha256"]


def test_first_parent_log_lists_merges_newest_first(repo: Repo) -> None:
    start = sh(repo.root, "rev-parse", "HEAD")
    create_branch(repo, "integ", start)
    sides = []
    for name in ("one", "two"):
        sh(repo.root, "checkout", "-q", "-b", f"task/{name}", start)
        sides.append(commit_file(repo.root, f"{name}.txt", f"{name}\n"))
    messages = ["merge one\n\nBody line.\n\nOrchard-Task: one\nOrchard-Run: r1",
                "merge two: a subject\n\nOrchard-Task: two\nSigned-off-by: x <x@example.invalid>"]
    merged = [merge_into(repo, "integ", side, message).commit for side, message in zip(sides, messages, strict=True)]
    log = first_parent_log(repo, start, "refs/heads/integ")
    assert log == [(merged[1], messages[1]), (merged[0], messages[0])]  # the task commits are not first parents
    assert first_parent_log(repo, str(merged[0]), "refs/heads/integ") == [(merged[1], messages[1])]
    assert first_parent_log(repo, "refs/heads/integ", start) == []


def test_init_repository(tmp_path: Path) -> None:
    made = init_repository(tmp_path / "new" / "repo", "trunk")
    assert made.root == (tmp_path / "new" / "repo").resolve()
    assert sh(made.root, "symbolic-ref", "HEAD") == "refs/heads/trunk"
    with pytest.raises(RefProblem, match="invalid branch name"):
        init_repository(tmp_path / "other", "-b")


@settings(max_examples=200, deadline=None)
@given(name=st.lists(st.text("ab.-_/@{}~^: *?[\\lockLOCK\x01é", min_size=1, max_size=6), min_size=1, max_size=3)
       .map("/".join))
def test_branch_names_are_judged_as_git_judges_them(name: str) -> None:
    """The check that skips git for plain names accepts nothing `git check-ref-format` refuses."""
    git_says = subprocess.run(["git", "check-ref-format", f"refs/heads/{name}"], capture_output=True).returncode == 0
    try:
        validate_branch_name(Path("/"), name)
        ours = True
    except RefProblem:
        ours = False
    assert ours == (git_says and not name.startswith("-")), name


def test_tip_descending_from_and_delete_ref(repo: Repo) -> None:
    start = sh(repo.root, "rev-parse", "HEAD")
    create_branch(repo, "task", start)
    assert tip_descending_from(repo, "refs/heads/task", start) == start  # nothing done yet
    sh(repo.root, "checkout", "-q", "task")
    one = commit_file(repo.root, "one.txt", "1\n")
    assert tip_descending_from(repo, "refs/heads/task", start) == one  # a child
    two = commit_file(repo.root, "two.txt", "2\n")
    assert tip_descending_from(repo, "refs/heads/task", start) == two  # further down
    assert tip_descending_from(repo, "refs/heads/task", two) == two
    sh(repo.root, "checkout", "-q", "--orphan", "other")
    commit_file(repo.root, "other.txt", "o\n")
    sh(repo.root, "branch", "-f", "task", "HEAD")
    assert tip_descending_from(repo, "refs/heads/task", start) is None  # unrelated history
    assert tip_descending_from(repo, "refs/heads/missing", start) is None
    delete_ref(repo, "refs/heads/task")
    delete_ref(repo, "refs/heads/task")  # missing is fine
    assert not branch_exists(repo, "task")
