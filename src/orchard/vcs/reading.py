"""Reads of a commit for analysis (`orchard.analysis`): its paths, the contents of some of its files, and what
recent commits changed (three git processes at most, whatever the plan); and what a checkout holds that no commit
does (`runtime.programs`)."""

from __future__ import annotations

from pathlib import Path

from orchard.vcs.git import _git


def tree_paths(root: Path, commit: str) -> list[str]:
    """Every file path in `commit`'s tree."""
    out = _git(root, "ls-tree", "-r", "-z", "--name-only", "--full-tree", "--end-of-options", commit).stdout
    return [p for p in out.split("\0") if p]


def read_blobs(root: Path, commit: str, paths: list[str], *, max_bytes: int) -> dict[str, str]:
    """The text of each of `paths` in `commit` (one `git cat-file --batch`); paths git cannot name on one line,
    missing files, files over `max_bytes` and non-blobs are left out."""
    names = [p for p in paths if "\n" not in p and "\r" not in p]
    if not names:
        return {}
    request = "".join(f"{commit}:{p}\n" for p in names)
    # the runner decodes with surrogateescape, so encoding back gives git's bytes, which the sizes count
    data = _git(root, "cat-file", "--batch", input=request).stdout.encode("utf-8", "surrogateescape")
    found: dict[str, str] = {}
    at = 0
    for name in names:
        end = data.index(b"\n", at)
        header = data[at:end].split()
        at = end + 1
        if len(header) != 3:
            continue  # "<object> missing": no content follows
        size = int(header[2])
        if header[1] == b"blob" and size <= max_bytes:
            found[name] = data[at: at + size].decode("utf-8", "replace")
        at += size + 1
    return found


def changed_paths_log(root: Path, commit: str, limit: int, marker: str) -> str:
    """`git log` of the last `limit` commits reachable from `commit` (merges left out: they change nothing of their
    own), each commit's id after `marker`, then the paths it changed, NUL-separated."""
    return _git(root, "log", "-z", "--no-merges", "--no-renames", "--name-only", f"--format={marker}%H",
                f"--max-count={limit}", "--end-of-options", commit, "--").stdout


def uncommitted_paths(root: Path) -> list[str]:
    """The checkout's files that differ from HEAD: modified or added (staged or not) and untracked ones git does
    not ignore, relative to the root (a rename's new path)."""
    out = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames").stdout
    return [entry[3:] for entry in out.split("\0") if len(entry) > 3]
