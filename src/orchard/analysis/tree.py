"""The base tree as an index: its paths, directories, file names and Python module names, and glob expansion.

Pure: built from the list of tracked paths alone. The indexes a plan does not need (module names for a plan whose
prompts name no module) are never built.
"""

from __future__ import annotations

import bisect
import posixpath
import re
from collections import defaultdict
from collections.abc import Iterable
from fnmatch import fnmatchcase
from functools import cached_property

WILDCARD = re.compile(r"[*?\[]")
TEST_DIRS = frozenset({"tests", "test", "testing"})


def is_test_file(path: str) -> bool:
    """A Python test module: `test_*.py`, `*_test.py`, or any module under a `tests/` directory (not conftest)."""
    name = posixpath.basename(path)
    if not name.endswith(".py") or name in ("conftest.py", "__init__.py"):
        return False
    if name.startswith("test_") or name.endswith("_test.py"):
        return True
    return any(part in TEST_DIRS for part in path.split("/")[:-1])


class Tree:
    """The tracked paths of one commit, with the lookups inference needs."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths: tuple[str, ...] = tuple(sorted(set(paths)))
        self.files = frozenset(self.paths)

    @cached_property
    def dirs(self) -> frozenset[str]:
        """Every directory some tracked path lies in (the root as "")."""
        found = {""}
        for path in self.paths:
            head = posixpath.dirname(path)
            while head not in found:
                found.add(head)
                head = posixpath.dirname(head)
        return frozenset(found)

    @cached_property
    def by_name(self) -> dict[str, tuple[str, ...]]:
        """Paths by their last component."""
        names: dict[str, list[str]] = defaultdict(list)
        for path in self.paths:
            names[posixpath.basename(path)].append(path)
        return {name: tuple(found) for name, found in names.items()}

    @cached_property
    def modules(self) -> dict[str, tuple[str, ...]]:
        """Python module names (`orchard.core.graph`) to the files that define them (`__init__.py` for packages)."""
        packages = {posixpath.dirname(p) for p in self.paths if posixpath.basename(p) == "__init__.py"}
        found: dict[str, list[str]] = defaultdict(list)
        for path in self.paths:
            if path.endswith(".py"):
                found[module_name(path, packages)].append(path)
        return {name: tuple(paths) for name, paths in found.items() if name}

    @cached_property
    def module_by_last(self) -> dict[str, tuple[str, ...]]:
        """Module names by their last component, for names written without their top package (`core.graph`)."""
        found: dict[str, list[str]] = defaultdict(list)
        for name in self.modules:
            found[name.rsplit(".", 1)[-1]].append(name)
        return {last: tuple(names) for last, names in found.items()}

    def under(self, directory: str) -> list[str]:
        """The tracked paths inside `directory` (a contiguous run of the sorted paths)."""
        prefix = directory.rstrip("/") + "/"
        lo = bisect.bisect_left(self.paths, prefix)
        hi = bisect.bisect_left(self.paths, prefix + "\U0010ffff")
        return list(self.paths[lo:hi])

    def expand(self, pattern: str) -> list[str]:
        """The tracked paths a glob matches, `*` crossing `/` as in declared `files` (`core.graph.globs_overlap`);
        a directory names everything inside it."""
        pattern = pattern.rstrip("/")
        wildcard = WILDCARD.search(pattern)
        if wildcard is None:
            if pattern in self.files:
                return [pattern]
            return self.under(pattern) if pattern in self.dirs else []
        prefix = pattern[: wildcard.start()]
        lo = bisect.bisect_left(self.paths, prefix)
        hi = bisect.bisect_left(self.paths, prefix + "\U0010ffff")
        return [p for p in self.paths[lo:hi] if fnmatchcase(p, pattern)]

    def ending_with(self, tail: str) -> tuple[str, ...]:
        """The paths that are `tail` or end with `/tail` (a path written from somewhere inside the tree)."""
        name = posixpath.basename(tail)
        return tuple(p for p in self.by_name.get(name, ()) if p == tail or p.endswith("/" + tail))


def module_name(path: str, packages: set[str] | frozenset[str]) -> str:
    """The dotted name `path` imports as: from its topmost package's parent (`src/orchard/core/graph.py` →
    `orchard.core.graph`), or from its own directory when it is in no package (`tests/helpers.py` → `helpers`)."""
    directory = posixpath.dirname(path)
    top = None
    while directory in packages:
        top = directory
        directory = posixpath.dirname(directory)
    root = posixpath.dirname(top) if top is not None else posixpath.dirname(path)
    relative = path[len(root) + 1:] if root else path
    parts = relative.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) if all(part.isidentifier() for part in parts) else ""
