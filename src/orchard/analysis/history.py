"""Co-change: files that changed together in the recent history of the base, counted for the files tasks touch.

Pure: the history is a value (the paths each commit changed, newest first), read by `analysis.gitdata`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_HISTORY = 200  # commits read back from the base
# A commit changing more files than this is a sweep (a rename, a reformat, a version bump): it says nothing about
# which files belong together, and it would pair everything with everything.
MAX_COMMIT_FILES = 30
MIN_TOGETHER = 3  # commits in which both files changed, at least
# ... and at least this share of the commits that changed the busier of the two files: a file changed in most
# commits (a changelog, a library's core module) changes with everything but is coupled with nothing in particular.
# Measured against the rarer file instead, every file would look coupled with the changelog (docs/analysis.md).
MIN_SHARE = 0.3


@dataclass(frozen=True)
class History:
    """The paths each of the last `scanned` commits changed, newest first (sweeping commits left out)."""

    commits: tuple[frozenset[str], ...]
    scanned: int

    @staticmethod
    def of(commits: Iterable[Iterable[str]]) -> History:
        """From every scanned commit's paths: sweeps count as scanned but are not kept."""
        read = [frozenset(paths) for paths in commits]
        return History(tuple(c for c in read if 0 < len(c) <= MAX_COMMIT_FILES), len(read))


NO_HISTORY = History((), 0)


@dataclass(frozen=True, order=True)
class CoChange:
    """Two files (sorted) that changed together in `together` of the scanned commits."""

    a: str
    b: str
    together: int

    def text(self, scanned: int) -> str:
        return f"{self.a} and {self.b} changed together in {self.together} of the last {scanned} commits"


def parse_log(output: str, marker: str) -> list[list[str]]:
    """The paths of each commit in `git log -z --name-only --format=<marker>%H` output, in log order.

    Each commit starts with a field beginning with `marker` (a character no path starts with); the names after it
    are NUL-separated, the first one after a newline."""
    commits: list[list[str]] = []
    for field in output.split("\0"):
        name = field.lstrip("\n")
        if name.startswith(marker):
            commits.append([])
        elif name and commits:
            commits[-1].append(name)
    return commits


def co_changes(history: History, relevant: Iterable[str], *, min_together: int = MIN_TOGETHER,
               min_share: float = MIN_SHARE) -> list[CoChange]:
    """The pairs of `relevant` files that changed together often enough (`MIN_TOGETHER`, `MIN_SHARE`), sorted.

    Only the relevant files of each commit are paired, so the cost is the commits times the square of the touched
    files each holds, never the square of the repository."""
    wanted = frozenset(relevant)
    changes: Counter[str] = Counter()
    together: Counter[tuple[str, str]] = Counter()
    for commit in history.commits:
        hit = sorted(commit & wanted)
        changes.update(hit)
        together.update(itertools.combinations(hit, 2))
    return sorted(CoChange(a, b, n) for (a, b), n in together.items()
                  if n >= min_together and n >= min_share * max(changes[a], changes[b]))
