"""What an analysis finds, as immutable values: the files each task touches, the evidence coupling two tasks, the
suggested fix, and the whole result."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from orchard.analysis.tree import WILDCARD


class How(StrEnum):
    """How a task's file was found; the names are part of the `--json` contract."""

    DECLARED = "declared"  # the task's own `files`
    MENTIONED = "mentioned"  # a path, glob or file name in its prompt
    MODULE = "module"  # a Python module name in its prompt
    PAIRED = "paired"  # the test of a file it touches, or the implementation a test of it tests


class Kind(StrEnum):
    """What couples two tasks; the names are part of the `--json` contract."""

    OVERLAP = "overlap"  # they name a common file
    TESTS = "tests"  # one names a test, the other what it tests
    IMPORT = "import"  # a file of one imports a file of the other
    HISTORY = "history"  # a file of each changed together in enough recent commits


# Risks rank by their strongest kind of evidence, then by how much of it: measured on real histories, a shared file
# foretells a conflict best, then co-change, a test and its subject, an import (docs/analysis.md). With at most
# COUNTED_PER_KIND pieces counted per kind, these weights make the score that order exactly.
WEIGHTS = {Kind.OVERLAP: 1000, Kind.HISTORY: 100, Kind.TESTS: 10, Kind.IMPORT: 1}
COUNTED_PER_KIND = 9


@dataclass(frozen=True, order=True)
class FileRef:
    """One file a task will touch: a tracked path, a new file in a tracked directory, a directory (`dir/`) or a
    glob; `via` is what led there (the text as written, the module name, or the file it pairs with)."""

    path: str
    how: How
    via: str = ""

    @property
    def pattern(self) -> bool:
        """A glob or a directory: it names several files."""
        return self.path.endswith("/") or WILDCARD.search(self.path) is not None

    def reason(self) -> str:
        """`mentioned`, `mentioned as graph.py`, `module orchard.core.graph`, `paired with src/x.py` …"""
        if self.how is How.MODULE:
            return f"module {self.via}"
        if self.how is How.PAIRED:
            return f"paired with {self.via}"
        if self.via and self.via != self.path:
            return f"{self.how} as {self.via}"
        return str(self.how)


@dataclass(frozen=True)
class TaskFiles:
    """The files one task touches: its declared ones, or those inferred from its prompt."""

    task: str
    declared: bool
    files: tuple[FileRef, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(ref.path for ref in self.files)


@dataclass(frozen=True, order=True)
class Evidence:
    """One reason two tasks are coupled, in words (`src/api.py imports src/util.py`), with the two files."""

    kind: Kind
    text: str
    files: tuple[str, str]


@dataclass(frozen=True, order=True)
class Fix:
    """An edit to the plan that handles a risk: add `value` to `task`'s `field` (`depends_on` or `files`)."""

    task: str
    field: str
    value: tuple[str, ...]

    def text(self) -> str:
        return f"add {self.field}: [{', '.join(self.value)}] to {self.task}"


@dataclass(frozen=True)
class Risk:
    """Two tasks coupled by some evidence. `tasks` are in the plan's order of work (a topological order): the fix
    makes the second wait for the first. `covered` says why the plan already handles it ("" for a risk)."""

    tasks: tuple[str, str]
    evidence: tuple[Evidence, ...]
    fixes: tuple[Fix, ...] = ()
    covered: str = ""

    @property
    def score(self) -> int:
        """Evidence weighed by kind, at most COUNTED_PER_KIND pieces of each kind."""
        total = 0
        for kind, weight in WEIGHTS.items():
            total += weight * min(COUNTED_PER_KIND, sum(1 for e in self.evidence if e.kind is kind))
        return total


@dataclass(frozen=True)
class Analysis:
    """Everything `orchard analyze` found in one plan against one base commit."""

    source: str
    base: str | None  # the commit analysed; None when the repository has no commits
    history_limit: int  # commits the co-change scan was allowed to read
    history_scanned: int  # commits it read (fewer in a young repository)
    files: tuple[TaskFiles, ...]  # in plan order
    risks: tuple[Risk, ...]  # ranked: highest score first
    covered: tuple[Risk, ...]  # coupled pairs the plan already orders or keeps apart
