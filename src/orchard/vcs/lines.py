"""Lines a change adds or removes, file by file (`git diff` between two commits, read as unified diff), and
git's conflict markers: what the guardrails on a result (`runtime.guardrails`) compare.

Blank lines are never counted: they carry no one's work, and every reflow moves them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from orchard.vcs.git import Repo, _git

Lines = dict[str, Counter[str]]  # path → each line's text and how many times
MARKER = re.compile(r"^(<{7}|>{7})( |$)", re.MULTILINE)  # a conflict marker git left (`=======` alone is no proof)


def diff_lines(repo: Repo, old: str, new: str, paths: Sequence[str] = ()) -> tuple[Lines, Lines]:
    """The lines `new` adds to and removes from `old`, by path (renames are not followed: a moved line counts as
    removed from one path and added to another)."""
    spec = ("--", *(f":(literal){p}" for p in paths)) if paths else ()
    out = _git(repo, "diff", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames", "--unified=0",
               "--end-of-options", old, new, *spec).stdout
    return parse_diff(out.splitlines())


def diff_numstat(repo: Repo, old: str, new: str) -> list[tuple[str, int | None, int | None]]:
    """Each path `new` changes against `old`, with its lines added and removed (None, None for a binary file)."""
    out = _git(repo, "diff", "--numstat", "-z", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames",
               "--end-of-options", old, new).stdout
    stats = []
    for entry in out.split("\0"):
        added, _, rest = entry.partition("\t")
        removed, _, path = rest.partition("\t")
        if path:
            stats.append((path, int(added) if added.isdigit() else None, int(removed) if removed.isdigit() else None))
    return stats


def diff_text(repo: Repo, old: str, new: str, *, stat: bool = False) -> str:
    """The unified diff (or with `stat`, git's diffstat) from `old` to `new`, as git prints it, with no external
    diff driver or textconv filter (an agent's `.gitattributes` must not run anything)."""
    return _git(repo, "diff", "--no-color", "--no-ext-diff", "--no-textconv", *(("--stat",) if stat else ()),
                "--end-of-options", old, new).stdout


def first_parent(repo: Repo, commit: str) -> str | None:
    """The first parent of a merge commit, None for a commit with fewer than two parents."""
    parents = _git(repo, "rev-list", "--parents", "-n", "1", "--end-of-options", commit).stdout.split()[1:]
    return parents[0] if len(parents) >= 2 else None


def parse_diff(lines: Iterable[str]) -> tuple[Lines, Lines]:
    """Added and removed lines of a unified diff, by the path on its side."""
    added: Lines = {}
    removed: Lines = {}
    old_path = new_path = ""
    for line in lines:
        if line.startswith("--- "):
            old_path = _path(line[4:])
        elif line.startswith("+++ "):
            new_path = _path(line[4:])
        elif line.startswith("+") and line[1:].strip():
            added.setdefault(new_path, Counter())[line[1:]] += 1
        elif line.startswith("-") and line[1:].strip():
            removed.setdefault(old_path, Counter())[line[1:]] += 1
    return added, removed


def _path(text: str) -> str:
    """A diff header's path without its `a/` or `b/` (quoted paths keep their quotes: they are only compared)."""
    return "" if text == "/dev/null" else text.split("/", 1)[1] if text[:2] in ("a/", "b/") else text


def missing(wanted: Lines, repo: Repo, commit: str) -> Lines:
    """Of `wanted`, the lines `commit`'s version of each file no longer has (as many times as wanted)."""
    lost: Lines = {}
    for path, lines in wanted.items():
        have = Counter(line for line in file_text(repo, commit, path).splitlines() if line.strip())
        short = Counter({line: n - have[line] for line, n in lines.items() if n > have[line]})
        if short:
            lost[path] = short
    return lost


def file_text(repo: Repo, commit: str, path: str) -> str:
    """The file at `commit` ("" when it has none)."""
    proc = _git(repo, "cat-file", "blob", "--end-of-options", f"{commit}:{path}", check=False)
    return proc.stdout if proc.returncode == 0 else ""


def with_markers(repo: Repo, commit: str, paths: Sequence[str]) -> list[str]:
    """Of `paths`, those whose version at `commit` still holds a conflict marker."""
    return [p for p in paths if MARKER.search(file_text(repo, commit, p))]


def shown(lines: Lines, limit: int = 12) -> str:
    """Lines as `path: text` list items, the first `limit` of them."""
    items = [f"- {path}: {line.strip()}" for path, counter in sorted(lines.items()) for line in counter]
    more = f"\n- … and {len(items) - limit} more" if len(items) > limit else ""
    return "\n".join(items[:limit]) + more


def overlap(one: Lines, other: Lines) -> Lines:
    """The lines in both, by path (each as often as the lesser count)."""
    return {path: common for path, lines in one.items() if (common := lines & other.get(path, Counter()))}


def merge_base(repo: Repo, one: str, other: str) -> str:
    return _git(repo, "merge-base", "--end-of-options", one, other).stdout.strip()


def subjects(repo: Repo, old: str, new: str, limit: int = 20) -> list[str]:
    """The first lines of the commits in `old..new`, newest first."""
    out = _git(repo, "log", f"--max-count={limit}", "--format=%s", "--end-of-options", f"{old}..{new}").stdout
    return [line for line in out.splitlines() if line]
