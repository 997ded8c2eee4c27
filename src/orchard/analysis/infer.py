"""The files a task will touch, inferred from its prompt: paths, globs, file names and Python module names it
mentions that the base tree has (or whose directory it has, for a new file), and the tests paired with them.

Pure: the tree and the import graph are values handed in.
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from collections.abc import Iterator
from functools import cached_property

from orchard.analysis.imports import ImportGraph, tested_together
from orchard.analysis.model import FileRef, How
from orchard.analysis.tree import WILDCARD, Tree, is_test_file

# Path-like words: letters, digits, `_`, `.`, `/`, `-` and glob stars; anything else (spaces, quotes, backticks,
# parentheses, `:` of `path:line`, commas) ends one.
_WORD = re.compile(r"[\w./*?-]+")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,8}$")
# Tests named for what they test: `test_graph.py`, `graph_test.py`, or with the package: `test_core_graph.py`.
_TEST_AFFIXES = (("test_", ""), ("", "_test"))
MAX_NAME_PAIRS = 2  # a test name that fits more implementations than this pairs only with those it imports


def words(prompt: str) -> Iterator[str]:
    """The distinct path-like words of a prompt, in order, stripped of sentence punctuation and a leading `./`."""
    seen: set[str] = set()
    for match in _WORD.finditer(prompt):
        word = match.group().strip("-").rstrip(".")
        while word.startswith("./"):
            word = word[2:]
        if word in seen or word.startswith("/") or "//" in word or not any(c.isalpha() for c in word):
            continue
        seen.add(word)
        if "/" in word or "." in word or WILDCARD.search(word):
            yield word


def resolve(word: str, tree: Tree) -> list[FileRef]:
    """What one word of a prompt names in the tree, by the first rule that matches (see docs/analysis.md)."""
    while word.startswith("./"):
        word = word[2:]
    if WILDCARD.search(word):
        return [FileRef(word, How.MENTIONED)] if ("/" in word or word.startswith("*.")) and tree.expand(word) else []
    if word in tree.files:
        return [FileRef(word, How.MENTIONED)]
    directory = word.rstrip("/")
    if directory in tree.dirs and directory and ("/" in directory or word.endswith("/")):
        return [FileRef(directory + "/", How.MENTIONED, word)]
    if "/" not in word:
        return _module(word, tree) or _unique([*tree.by_name.get(word, ())], word)
    for candidate in _path_spellings(word):
        found = _unique([*tree.ending_with(candidate)], word)
        if found:
            return found
    parent = posixpath.dirname(directory)
    if parent in tree.dirs and parent and _EXTENSION.search(directory):
        return [FileRef(directory, How.MENTIONED, "new file")]
    return []


def _unique(paths: list[str], word: str) -> list[FileRef]:
    """The one path a partial spelling names; none when it could be several."""
    return [FileRef(paths[0], How.MENTIONED, word)] if len(paths) == 1 else []


def _path_spellings(word: str) -> Iterator[str]:
    """A path written from inside the tree, as is, with `.py` added, or with attributes after it dropped
    (`runtime/cleanup.clean_run` → `runtime/cleanup.py`)."""
    yield word
    if not _EXTENSION.search(word):
        yield word + ".py"
    head, _, tail = word.rpartition("/")
    parts = tail.split(".")
    for end in range(len(parts) - 1, 0, -1):
        yield f"{head}/{'.'.join(parts[:end])}.py"


def _module(word: str, tree: Tree) -> list[FileRef]:
    """A dotted Python name: the longest leading part that is a module (`orchard.core.graph.critical_path` →
    `orchard.core.graph`), by its full name or, when unique, by its last parts (`core.graph`)."""
    if not _DOTTED.match(word):
        return []
    parts = word.split(".")
    for end in range(len(parts), 1, -1):
        name = ".".join(parts[:end])
        paths = tree.modules.get(name)
        if paths is None:
            full = [m for m in tree.module_by_last.get(parts[end - 1], ()) if m.endswith("." + name)]
            paths = tree.modules[full[0]] if len(full) == 1 else None
        if paths is not None and len(paths) == 1:
            return [FileRef(paths[0], How.MODULE, name)]
    return []


class Pairs:
    """Tests and the implementations they test, by name (`tests/test_x.py` ↔ `src/**/x.py`) and by import."""

    def __init__(self, tree: Tree, graph: ImportGraph) -> None:
        self.tree = tree
        self.graph = graph

    @cached_property
    def _implementations(self) -> dict[str, list[str]]:
        """Non-test Python files by the names a test of them would carry: `graph`, `core_graph`."""
        found: dict[str, list[str]] = defaultdict(list)
        for path in self.tree.paths:
            if path.endswith(".py") and not is_test_file(path) and not path.endswith("__init__.py"):
                for key in _subject_keys(path):
                    found[key].append(path)
        return found

    @cached_property
    def _tests(self) -> dict[str, list[str]]:
        """Test files by the name of their subject: `test_graph.py` → `graph`."""
        found: dict[str, list[str]] = defaultdict(list)
        for path in self.tree.paths:
            subject = _test_subject(path)
            if subject:
                found[subject].append(path)
        return found

    def of(self, path: str) -> list[str]:
        """The files paired with `path`, sorted."""
        if not path.endswith(".py") or path.endswith("__init__.py"):
            return []
        if _test_subject(path):
            return sorted(self._tested_by(path))
        named = {t for key in _subject_keys(path) for t in self._tests.get(key, ())}
        if path in self.tree.files:
            named |= {t for t in self.graph.tests_importing(path) if tested_together(self.graph, t, path)}
        return sorted(named - {path})

    def _tested_by(self, test: str) -> set[str]:
        subject = _test_subject(test)
        named = set(self._implementations.get(subject, ()))
        if test not in self.tree.files:
            return named if len(named) <= MAX_NAME_PAIRS else set()
        imported = self.graph.imports(test)
        if len(named) > MAX_NAME_PAIRS:
            named &= imported
        return named | {x for x in imported if not is_test_file(x) and tested_together(self.graph, test, x)}


def _subject_keys(path: str) -> tuple[str, ...]:
    """The names a test of `path` may carry: its stem, and its stem after its directory (`core/graph.py` →
    `graph`, `core_graph`)."""
    stem = posixpath.basename(path).removesuffix(".py")
    parent = posixpath.basename(posixpath.dirname(path))
    return (stem, f"{parent}_{stem}") if parent else (stem,)


def _test_subject(path: str) -> str:
    """`graph` for `test_graph.py` or `graph_test.py`; "" for a file that is not a test named that way."""
    if not is_test_file(path):
        return ""
    stem = posixpath.basename(path).removesuffix(".py")
    for prefix, suffix in _TEST_AFFIXES:
        if stem.startswith(prefix) and stem.endswith(suffix) and len(stem) > len(prefix) + len(suffix):
            return stem[len(prefix): len(stem) - len(suffix)]
    return ""


def inferred_files(prompt: str, tree: Tree, pairs: Pairs) -> tuple[FileRef, ...]:
    """The files a prompt says its task touches, one entry per path (the first way it was found wins), sorted."""
    found: dict[str, FileRef] = {}
    for word in words(prompt):
        for ref in resolve(word, tree):
            found.setdefault(ref.path, ref)
    direct = [ref for ref in found.values() if not ref.pattern]
    pairs.graph.load(ref.path for ref in direct)
    for ref in direct:
        for other in pairs.of(ref.path):
            found.setdefault(other, FileRef(other, How.PAIRED, ref.path))
    return tuple(sorted(found.values()))
