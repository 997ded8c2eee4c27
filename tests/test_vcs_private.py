"""orchard's own repository: borrowing the user's objects, restoring what an agent changed, publishing to the user's
repository (real git, temporary repositories)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchard.errors import GitError
from orchard.vcs import Repo, find_repo
from orchard.vcs.private import OwnRepository, open_own_repository, publish, ref_values
from tests.conftest import init_repo


def sh(cwd: Path, *args: str, input: str | None = None, check: bool = True) -> str:
    """git in `cwd` for test setup, with stdin, and its stripped stdout."""
    proc = subprocess.run(["git", "-C", str(cwd), *args], input=input, capture_output=True, text=True, check=check)
    return proc.stdout.strip()


@pytest.fixture
def own(tmp_path: Path) -> OwnRepository:
    user = find_repo(init_repo(tmp_path / "user", {"a.txt": "a\n"}))
    return open_own_repository(user, user.root / ".orchard" / "git")


def _commit(repo: Repo, parent: str, text: str) -> str:
    """A commit on `parent` whose tree holds `text` as b.txt, written into `repo` only."""
    blob = sh(repo.root, "hash-object", "-w", "--stdin", input=text)
    tree = sh(repo.root, "mktree", input=f"100644 blob {blob}\tb.txt\n")
    return sh(repo.root, "-c", "user.name=t", "-c", "user.email=t@x", "commit-tree", "-p", parent, "-m", text, tree)


def _has(repo: Repo, oid: str) -> bool:
    return sh(repo.root, "cat-file", "-t", oid, check=False) == "commit"


def test_the_own_repository_reads_the_users_objects_and_keeps_its_own(own: OwnRepository) -> None:
    base = sh(own.user.root, "rev-parse", "HEAD")
    assert _has(own.repo, base)  # borrowed through the alternates, not copied
    assert not any(p.is_file() for p in (own.root / "objects").rglob("*") if p.parent.name != "info")
    mine = _commit(own.repo, base, "made in orchard's repository\n")
    assert _has(own.repo, mine) and not _has(own.user, mine)
    assert sh(own.repo.root, "rev-parse", "--is-bare-repository") == "true"


def test_restore_puts_back_config_hooks_info_and_alternates_and_says_what(own: OwnRepository) -> None:
    pristine = {name: (own.root / name).read_bytes() for name, _ in own.files}
    assert own.restore() == []  # nothing to do: a few reads
    with (own.root / "config").open("a") as fh:
        fh.write('[core]\n\tfsmonitor = /bin/false\n[filter "x"]\n\tclean = /bin/false\n')
    (own.root / "hooks" / "post-commit").write_text("#!/bin/sh\n")
    (own.root / "info" / "attributes").write_text("* filter=x\n")
    (own.root / "info" / "grafts").write_text("")
    (own.root / "objects" / "info" / "alternates").write_text("/elsewhere\n")
    (own.root / "shallow").write_text("")
    (own.root / "HEAD").unlink()
    repaired = own.restore()
    assert sorted(repaired) == sorted(["config", "HEAD", "objects/info/alternates", "info/attributes", "shallow",
                                       "hooks/post-commit", "info/grafts"])
    assert {name: (own.root / name).read_bytes() for name, _ in own.files} == pristine
    assert not (own.root / "shallow").exists() and list((own.root / "hooks").iterdir()) == []
    assert own.restore() == []


def test_a_symlinked_config_is_replaced_not_followed(own: OwnRepository, tmp_path: Path) -> None:
    target = tmp_path / "someone-elses-file"
    target.write_text("keep me\n")
    (own.root / "config").unlink()
    (own.root / "config").symlink_to(target)
    assert own.restore() == ["config"]
    assert target.read_text() == "keep me\n" and not (own.root / "config").is_symlink()


def test_publish_fetches_the_objects_and_moves_the_users_refs_in_one_transaction(own: OwnRepository) -> None:
    base = sh(own.user.root, "rev-parse", "HEAD")
    first = _commit(own.repo, base, "one\n")
    ref, kept = "refs/heads/orchard/r/integration", "refs/heads/orchard/r/task/t"
    assert publish(own, {ref: first, kept: first}) == 2
    assert ref_values(own.user, "refs/heads/orchard/") == {ref: first, kept: first} and _has(own.user, first)
    assert publish(own, {ref: first}) == 0  # nothing to do: one for-each-ref, no fetch
    second = _commit(own.repo, first, "two\n")
    assert publish(own, {ref: second, kept: None}) == 2
    assert ref_values(own.user, "refs/heads/orchard/") == {ref: second}
    # someone moved the user's copy after orchard read it: nothing is half done
    third = _commit(own.repo, second, "three\n")
    sh(own.user.root, "update-ref", ref, base)
    with pytest.raises(GitError):
        publish(own, {ref: third, kept: third}, current={ref: second})
    assert ref_values(own.user, "refs/heads/orchard/") == {ref: base}
