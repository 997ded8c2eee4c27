"""Commits between repositories that share nothing, as bundles (`vcs.bundles`; issue 16, item 3): a seed of the
base once, then only what the receiver lacks; git verifies each, and a bundle is taken only for the commit asked."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orchard.errors import GitError
from orchard.vcs.bundles import fetch_bundle, write_bundle
from tests.conftest import git, init_repo


def commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", "--", name)
    git(repo, "commit", "-q", "-m", f"add {name}")
    return git(repo, "rev-parse", "HEAD").strip()


def test_a_seed_then_only_what_is_new_travels_and_arrives_whole(tmp_path: Path) -> None:
    noise = "".join(hashlib.sha256(str(i).encode()).hexdigest() + "\n" for i in range(3000))  # ~200 KB, incompressible
    sender = init_repo(tmp_path / "sender", {"README.md": "# seed\n", "big.txt": noise})
    base = git(sender, "rev-parse", "HEAD").strip()
    receiver = tmp_path / "receiver"
    git(tmp_path, "init", "-q", "--bare", str(receiver))

    seed = tmp_path / "seed.bundle"
    assert write_bundle(sender, seed, base)
    fetch_bundle(receiver, seed, tip=base, into="refs/orchard/tips/base")
    assert git(receiver, "rev-parse", "refs/orchard/tips/base").strip() == base

    tip = commit(sender, "a.txt", "a\n" * 1000)
    assert seed.stat().st_size > 100_000
    step = tmp_path / "step.bundle"
    assert write_bundle(sender, step, tip, known=[base])
    assert step.stat().st_size < 2_000  # the seed's objects are not sent again
    fetch_bundle(receiver, step, tip=tip, into="refs/orchard/tips/t1")
    assert git(receiver, "show", f"{tip}:a.txt") == "a\n" * 1000
    git(receiver, "fsck", "--no-dangling")  # whole: every object the tip needs is there
    assert not git(sender, "for-each-ref", "refs/orchard/").strip()  # the sending ref is gone again

    assert not write_bundle(sender, tmp_path / "none.bundle", base, known=[tip])  # nothing new: nothing sent
    assert not (tmp_path / "none.bundle").exists()


def test_a_bundle_without_its_prerequisites_or_for_another_commit_is_refused(tmp_path: Path) -> None:
    sender = init_repo(tmp_path / "sender", {"README.md": "# seed\n"})
    base = git(sender, "rev-parse", "HEAD").strip()
    tip = commit(sender, "b.txt", "b\n")
    receiver = tmp_path / "receiver"
    git(tmp_path, "init", "-q", "--bare", str(receiver))
    thin = tmp_path / "thin.bundle"
    assert write_bundle(sender, thin, tip, known=[base])
    with pytest.raises(GitError):  # the receiver lacks the base the bundle builds on
        fetch_bundle(receiver, thin, tip=tip, into="refs/orchard/tips/t")
    whole = tmp_path / "whole.bundle"
    assert write_bundle(sender, whole, tip)
    with pytest.raises(GitError, match="does not hold just"):
        fetch_bundle(receiver, whole, tip=base, into="refs/orchard/tips/t")
    with pytest.raises(GitError, match="not a commit id"):
        write_bundle(sender, whole, "--output=/tmp/x")
    assert git(receiver, "for-each-ref").strip() == ""
