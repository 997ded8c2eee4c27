"""Landing: merging the integration branch into the user's base branch, the one step that may touch
the user's checkout — and only when the base branch is checked out there, clean, with the user's consent
(the engine calls this only on an explicit `land` request).

The result (a fast-forward, or a merge commit made without touching any checkout) is known before the checkout
changes; the checkout then moves to it like `git checkout` would (`read-tree -m -u`) and the branch follows. A
marker file says which move is under way until it is done, so a land killed half-way (files written, the index
locked, the branch not moved) is finished by the next one, which checks that everything changed since is part of
that move (`land_interrupted`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Literal

from orchard.errors import GitError, LandRefused, RefProblem
from orchard.vcs.git import (
    Repo,
    _git,
    branch_ref,
    git_timeout,
    is_ancestor,
    read_ref,
    set_ref,
    validate_branch_name,
)
from orchard.vcs.merge import commit_tree, merge_into, merge_trees
from orchard.vcs.worktrees import list_worktrees

LandResult = Literal["fast-forward", "merged", "up-to-date"]


def land(repo: Repo, integration_branch: str, base_branch: str, *, marker: Path | None = None) -> LandResult:
    """Merge `integration_branch` into `base_branch`: fast-forward when possible, else a merge commit. `marker`
    is where a move of the user's checkout is recorded while it happens (a land interrupted there is finished
    first)."""
    for name in (integration_branch, base_branch):
        validate_branch_name(repo, name)
    finished = land_interrupted(repo, marker) if marker is not None else None
    source = _tip(repo, integration_branch)
    base = _tip(repo, base_branch)
    if is_ancestor(repo, source, base):
        return finished or "up-to-date"
    message = f"Merge branch '{integration_branch}' into {base_branch}"
    holder = _checked_out_at(repo, base_branch)
    if holder is None:
        return _land_ref(repo, base_branch, base, source, message)
    if holder != repo.root.resolve():
        raise LandRefused(
            f"cannot land: branch '{base_branch}' is checked out in another worktree at {holder}; "
            "switch that worktree to another branch, or land from it"
        )
    return _land_checkout(repo, branch_ref(base_branch), base, source, message, marker)


def _tip(repo: Repo, branch: str) -> str:
    """The commit `branch` points at; RefProblem if it does not exist."""
    sha = read_ref(repo, branch_ref(branch))
    if sha is None:
        raise RefProblem(f"unknown ref '{branch}'")
    return sha


def _checked_out_at(repo: Repo, branch: str) -> Path | None:
    """The (resolved) path of the worktree that has `branch` checked out, if any."""
    ref = branch_ref(branch)
    for wt in list_worktrees(repo):
        if wt.branch == ref and not wt.bare:
            return wt.path.resolve()
    return None


def _land_ref(repo: Repo, base_branch: str, base: str, source: str, message: str) -> LandResult:
    """Land onto a branch nobody has checked out by moving its ref (fast-forward or merge commit)."""
    ref = branch_ref(base_branch)
    if is_ancestor(repo, base, source):
        if not set_ref(repo, ref, source, base, "orchard: land (fast-forward)"):
            raise GitError(["update-ref", ref, source, base], 1, f"{ref} moved while landing")
        return "fast-forward"
    result = merge_into(repo, ref, source, message, expected_tip=base)
    if result.status == "conflict":
        raise LandRefused(
            f"cannot land: merging into '{base_branch}' conflicts in: {', '.join(result.conflicts)}; "
            f"merge '{base_branch}' into the integration branch and resolve, then land again"
        )
    return "merged"


def _land_checkout(repo: Repo, ref: str, base: str, source: str, message: str, marker: Path | None) -> LandResult:
    """Land onto the branch checked out in the user's checkout, if it is clean: the result first, then the
    checkout moved to it."""
    dirty = _dirty_paths(repo)
    if dirty:
        shown = ", ".join(dirty[:10]) + (f" (+{len(dirty) - 10} more)" if len(dirty) > 10 else "")
        raise LandRefused(
            f"cannot land: the checkout at {repo.root} has uncommitted changes ({shown}); commit or stash them first"
        )
    result: LandResult = "fast-forward"
    target = source
    if not is_ancestor(repo, base, source):
        merged = merge_trees(repo, base, source)
        if merged.conflicts:
            raise LandRefused(f"cannot land: merging into the checkout conflicts in: {', '.join(merged.conflicts)}; "
                              "nothing changed")
        target, result = commit_tree(repo, merged.tree, (base, source), message), "merged"
    _move_checkout(repo, ref, base, target, marker, result)
    return result


def _move_checkout(repo: Repo, ref: str, old: str, new: str, marker: Path | None, result: LandResult) -> None:
    """Move the checkout from commit `old` to `new` (as `git checkout` would: untracked files in the way stop
    it), then the checked-out branch; `marker` records the move until both are done."""
    if marker is not None:
        marker.write_text(json.dumps({"ref": ref, "old": old, "new": new, "result": result, "pid": os.getpid(),
                                      "started": time.time()}), encoding="utf-8")
    proc = _git(repo, "read-tree", "-m", "-u", "--end-of-options", old, new, check=False)
    if proc.returncode != 0:
        _forget(marker)
        raise LandRefused(f"cannot land: git refused to update the checkout, which is unchanged: "
                          f"{proc.stderr.strip()}")
    if not set_ref(repo, ref, new, old, "orchard: land"):
        raise GitError(["update-ref", ref, new, old], 1, f"{ref} moved while landing")
    _forget(marker)


def land_interrupted(repo: Repo, marker: Path) -> LandResult | None:
    """Finish the move of the checkout a killed land left half-done (`marker` says which); what that land was
    doing, if there was one.

    Refused, with the checkout left as it is, if a land is still running, the branch has moved since, or the
    checkout holds a change that is not part of the move (the user's own, made after)."""
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
        ref, old, new, result, pid, started = (record[k] for k in ("ref", "old", "new", "result", "pid", "started"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LandRefused(f"cannot land: {marker} is not a land orchard recorded ({exc}); remove it") from None
    if _alive(pid):
        raise LandRefused(f"cannot land: another land (pid {pid}) is updating the checkout")
    at = read_ref(repo, ref)
    if at != new:
        if at != old:
            raise LandRefused(f"cannot land: a land was interrupted while moving {ref} to {new[:10]}, and the branch "
                              f"has moved since; check the checkout, then remove {marker}")
        _wait_for_git(repo)  # orchard's git runs in a session of its own: it outlives a land killed with its group
        lock = repo.git_dir / "index.lock"
        if lock.exists() and lock.stat().st_mtime >= started - 1:  # no git holds it: a killed one left it
            lock.unlink()
        foreign = _not_part_of_move(repo, old, new)
        if foreign:
            raise LandRefused(f"cannot land: a land was interrupted, and the checkout has changes that are not part "
                              f"of it ({', '.join(foreign[:10])}); commit or remove them, then land again")
        _git(repo, "read-tree", "--reset", "-u", "--end-of-options", new)
        if not set_ref(repo, ref, new, old, "orchard: land (finished)"):
            raise GitError(["update-ref", ref, new, old], 1, f"{ref} moved while landing")
    _forget(marker)
    return "merged" if result == "merged" else "fast-forward"


def _not_part_of_move(repo: Repo, old: str, new: str) -> list[str]:
    """Paths of the checkout that differ from `old` for another reason than a move to `new` cut short. A path
    the move changes may hold `new`'s content, be empty (created, not yet written) or be absent (not written yet,
    or removed as `new` has it)."""
    moving: dict[str, tuple[str, str]] = {}  # path → (its mode and blob in `new`)
    fields = _z(_git(repo, "diff", "--raw", "--no-abbrev", "--no-renames", "-z", old, new, "--").stdout)
    for meta, path in zip(fields[::2], fields[1::2], strict=True):
        _, new_mode, _, new_blob, _ = meta.split()  # ":<old mode> <new mode> <old blob> <new blob> <status>"
        moving[path] = (new_mode, new_blob)
    changed = set(_z(_git(repo, "diff-index", "--name-only", "--no-renames", "-z", old, "--").stdout))
    changed |= set(moving) & set(_z(_git(repo, "ls-files", "--others", "-z").stdout))
    foreign = sorted(changed - set(moving))
    written = [p for p in sorted(changed & set(moving)) if _on_disk(repo, p) == "file" and moving[p][0] != "120000"]
    hashes = _git(repo, "hash-object", "--stdin-paths", input="".join(f"{p}\n" for p in written)).stdout.split()
    content = dict(zip(written, hashes, strict=True)) if written else {}
    for path in sorted(changed & set(moving)):
        mode, blob = moving[path]
        state = _on_disk(repo, path)
        ours = (state == "absent" or (state == "symlink" and mode == "120000")
                or (state == "file" and (content.get(path) == blob or (repo.root / path).stat().st_size == 0)))
        if not ours:
            foreign.append(path)
    return foreign


def _wait_for_git(repo: Repo) -> None:
    """Wait (as long as one git call may take) until no git process works in the checkout."""
    deadline = time.monotonic() + git_timeout()
    while _gits_in(repo.root) and time.monotonic() < deadline:
        time.sleep(0.05)


def _gits_in(root: Path) -> list[int]:
    """Live git processes whose working directory is `root` (from /proc: git changes there for `-C`)."""
    found, where = [], str(root.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "git" and os.readlink(entry / "cwd") == where:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _on_disk(repo: Repo, path: str) -> str:
    target = repo.root / path
    if target.is_symlink():
        return "symlink"
    return "file" if target.is_file() else "absent" if not target.exists() else "other"


def _z(out: str) -> list[str]:
    return [p for p in out.split("\0") if p]


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _forget(marker: Path | None) -> None:
    if marker is not None:
        marker.unlink(missing_ok=True)


def _dirty_paths(repo: Repo) -> list[str]:
    """Tracked files with unstaged or staged modifications in the user's checkout (untracked ignored)."""
    out = _git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=no").stdout
    paths: list[str] = []
    fields = iter(out.split("\0"))
    for entry in fields:
        if not entry:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":
            next(fields, None)  # the rename/copy source follows as its own field
    return paths
