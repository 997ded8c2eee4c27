"""Python import edges between the files of the base tree: which tracked file imports which.

A line scanner, not `ast`: it is several times faster on a repository's worth of files, reads Python 2 and files
with syntax errors alike, and what it may get wrong (an `import` line inside a docstring) only adds an edge. Only
imports that resolve to a tracked file count; the standard library and installed packages are not in the tree.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping

from orchard.analysis.tree import Tree, is_test_file

# Read the contents of many tracked files at once (one git process); paths it cannot read are left out.
Reader = Callable[[list[str]], Mapping[str, str]]

_FROM = re.compile(r"from\s+(\.*)([\w.]*)\s+import\s+(.*)", re.DOTALL)
_IMPORT = re.compile(r"import\s+(.*)", re.DOTALL)
# A module imported by more test files than this is a shared fixture of the suite, not the subject of those tests.
MAX_IMPORTING_TESTS = 3
# Pairing by import reads every test file once; past this many (a monorepo), tests pair by name alone, so that
# `orchard plan` stays quick.
MAX_SCANNED_TESTS = 2000


def import_statements(text: str) -> Iterator[tuple[int, str, list[str]]]:
    """(level, module, names) of each import statement: `from ..a.b import c, d` → (2, "a.b", ["c", "d"]);
    `import a.b as x, c` → (0, "a.b", []) and (0, "c", [])."""
    for statement in _statements(text):
        found = _FROM.match(statement)
        if found:
            names = [_first_word(n) for n in found.group(3).replace("(", " ").replace(")", " ").split(",")]
            yield len(found.group(1)), found.group(2), [n for n in names if n and n != "*"]
            continue
        plain = _IMPORT.match(statement)
        if plain:
            for name in plain.group(1).split(","):
                module = _first_word(name)
                if module:
                    yield 0, module, []


def _statements(text: str) -> Iterator[str]:
    """The import statements of a source text, each joined onto one line (parentheses and backslashes followed);
    lines inside triple-quoted strings are skipped."""
    in_string = False
    lines = iter(text.splitlines())
    for line in lines:
        quotes = line.count('"""') + line.count("'''")
        if in_string or quotes % 2:
            in_string ^= quotes % 2 == 1
            continue
        stripped = line.strip()
        if not stripped.startswith(("import ", "from ")):
            continue
        statement = stripped.split("#", 1)[0]
        while statement.endswith("\\") or ("(" in statement and ")" not in statement):
            more = next(lines, None)
            if more is None:
                break
            statement = statement.rstrip("\\") + " " + more.split("#", 1)[0].strip()
        yield statement


def _first_word(text: str) -> str:
    words = text.split()
    return words[0] if words and all(part.isidentifier() for part in words[0].split(".")) else ""


class ImportGraph:
    """The import edges of the tree's Python files, each file read and scanned once, only when asked about."""

    def __init__(self, tree: Tree, read: Reader) -> None:
        self.tree = tree
        self._read = read
        self._edges: dict[str, frozenset[str]] = {}
        self._tests_importing: dict[str, frozenset[str]] | None = None

    def load(self, paths: Iterable[str]) -> None:
        """Read and scan the Python files among `paths` not scanned yet, in one read."""
        wanted = sorted({p for p in paths if p.endswith(".py") and p in self.tree.files and p not in self._edges})
        if not wanted:
            return
        texts = self._read(wanted)
        for path in wanted:
            self._edges[path] = frozenset(self._resolve_all(path, texts.get(path, "")))

    def imports(self, path: str) -> frozenset[str]:
        """The tracked files `path` imports directly."""
        self.load([path])
        return self._edges.get(path, frozenset())

    def tests_importing(self, path: str) -> frozenset[str]:
        """The test files that import `path` directly (every test file is scanned on the first call; none in a
        tree with more than MAX_SCANNED_TESTS)."""
        if self._tests_importing is None:
            tests = [p for p in self.tree.paths if is_test_file(p)]
            if len(tests) > MAX_SCANNED_TESTS:
                tests = []
            self.load(tests)
            found: dict[str, set[str]] = {}
            for test in tests:
                for target in self._edges.get(test, ()):
                    found.setdefault(target, set()).add(test)
            self._tests_importing = {k: frozenset(v) for k, v in found.items()}
        return self._tests_importing.get(path, frozenset())

    def _resolve_all(self, path: str, text: str) -> Iterator[str]:
        for level, module, names in import_statements(text):
            for target in self._resolve(path, level, module, names):
                if target != path:
                    yield target

    def _resolve(self, path: str, level: int, module: str, names: list[str]) -> list[str]:
        """The files one statement imports: each name that is a submodule, else the module itself."""
        found: list[str] = []
        plain = not names  # `import a.b`, or a `from` naming something that is not a submodule
        for name in names:
            submodule = self._locate(path, level, f"{module}.{name}" if module else name)
            found += submodule
            plain = plain or not submodule
        if module and plain:
            found += self._locate(path, level, module)
        return found

    def _locate(self, importer: str, level: int, dotted: str) -> list[str]:
        """The files a module name means in `importer`: relative to its package `level` > 0 steps up."""
        if not level:
            return self._absolute(importer, dotted)
        base = posixpath.dirname(importer)
        for _ in range(level - 1):
            base = posixpath.dirname(base)
        return self._relative(base, dotted)

    def _relative(self, base: str, dotted: str) -> list[str]:
        """A module named relative to the directory `base` (`from .a import b` in `pkg/x.py`: `pkg/a/b`)."""
        stem = posixpath.join(base, *dotted.split("."))
        return [p for p in (stem + ".py", stem + "/__init__.py") if p in self.tree.files]

    def _absolute(self, importer: str, dotted: str) -> list[str]:
        """A module by its full name; outside a package, a sibling module first (the script's directory leads
        `sys.path`); of several files with that name, those nearest the importer."""
        directory = posixpath.dirname(importer)
        if posixpath.join(directory, "__init__.py") not in self.tree.files:
            sibling = self._relative(directory, dotted)
            if sibling:
                return sibling
        found = self.tree.modules.get(dotted, ())
        if len(found) <= 1:
            return list(found)
        closeness = {p: len(posixpath.commonpath([p, importer])) for p in found}
        best = max(closeness.values())
        return [p for p in found if closeness[p] == best]


def tested_together(graph: ImportGraph, test: str, implementation: str) -> bool:
    """Whether `test` imports `implementation`, and few enough tests do that it is the test's subject."""
    importers = graph.tests_importing(implementation)
    return test in importers and len(importers) <= MAX_IMPORTING_TESTS
