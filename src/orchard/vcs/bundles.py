"""Git bundles: how commits travel between orchard's repository and another machine's without either side reaching
into the other's. The sender writes a bundle of one commit less what the receiver is known to have; the receiver
has git verify it (its prerequisites present, its packs whole) and fetches that one commit into a ref it names.
Nothing of a bundle is trusted beyond what git checks: the commit asked for must be the bundle's only head."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path

from orchard.errors import GitError
from orchard.vcs.git import Repo, _git, delete_ref, is_oid, set_ref

SENDING = "refs/orchard/bundle/"  # a bundle names refs, not commits: a ref of its own while one is written


def write_bundle(repo: Repo | Path, path: Path, tip: str, *, known: Sequence[str] = ()) -> bool:
    """Write to `path` a bundle of commit `tip` and what it needs beyond the history of the commits `known` (what
    the receiver has); False, writing nothing, when `tip` is in that history already."""
    for oid in (tip, *known):
        if not is_oid(oid):
            raise GitError(["bundle", "create"], 2, f"not a commit id: {oid!r}")
    count = _git(repo, "rev-list", "--count", tip, "--not", *known, "--").stdout.strip()
    if count == "0":
        return False
    name = SENDING + secrets.token_hex(8)
    set_ref(repo, name, tip, None, "orchard: bundle")
    try:
        _git(repo, "bundle", "create", "--quiet", "--end-of-options", str(path), name, *(f"^{oid}" for oid in known))
    finally:
        delete_ref(repo, name)
    return True


def fetch_bundle(repo: Repo | Path, path: Path, *, tip: str, into: str) -> None:
    """Fetch commit `tip` from the bundle at `path` into the ref `into` (set to it, whatever it was), once git has
    verified the bundle against `repo`; a bundle whose one head is not `tip` is refused."""
    if not is_oid(tip) or not into.startswith("refs/"):
        raise GitError(["bundle", "fetch"], 2, f"refused: commit {tip!r} into {into!r}")
    _git(repo, "bundle", "verify", "--quiet", "--end-of-options", str(path))
    listed = _git(repo, "bundle", "list-heads", "--end-of-options", str(path)).stdout
    heads = [line.split(" ", 1) for line in listed.splitlines()]
    if len(heads) != 1 or heads[0][0] != tip or not heads[0][1].startswith(SENDING):
        raise GitError(["bundle", "list-heads", str(path)], 1, f"the bundle does not hold just {tip}: {heads}")
    _git(repo, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
         "--end-of-options", str(path), f"+{heads[0][1]}:{into}")
