"""The layering rules of DESIGN.md and the security basics, checked on the source itself.

`check(rel, source)` lists every violation in one module of src/orchard. The real tree must have none, and
mutants of real modules prove that each rule and each import form is actually seen, not merely written down.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "orchard"
MAX_LINES = 500


def _names(words: str) -> frozenset[str]:
    return frozenset(words.split())


@dataclass(frozen=True)
class Layer:
    """What one package may import: orchard packages (None: any), stdlib (None: all of it), third-party."""

    orchard: frozenset[str] | None
    stdlib: frozenset[str] | None = None
    third_party: frozenset[str] = frozenset()


# core is the pure rules layer: no clock, no files, no processes, so its stdlib is an explicit allowlist.
CORE_STDLIB = _names("__future__ abc bisect collections collections.abc contextlib copyreg dataclasses datetime enum "
                     "fnmatch functools heapq itertools json logging math re statistics string textwrap types "
                     "typing posixpath")

# A module's package is its first path part under src/orchard; top-level modules are their own (`api`, `errors` …).
RULES: dict[str, Layer] = {
    "core": Layer(_names("core errors"), stdlib=CORE_STDLIB),
    "errors": Layer(frozenset()),
    "plan": Layer(_names("core errors plan"), third_party=_names("yaml")),
    "agents": Layer(_names("core errors agents")),
    "vcs": Layer(_names("errors vcs")),
    "store": Layer(_names("core errors store")),
    "ui": Layer(_names("core store errors ui"), third_party=_names("rich")),
    "runtime": Layer(_names("core agents vcs store errors runtime"), third_party=_names("psutil")),
    "planner": Layer(_names("core errors agents vcs plan runtime planner"), third_party=_names("yaml")),
    "analysis": Layer(_names("core errors vcs analysis"), third_party=_names("yaml")),
    "testing": Layer(_names("core errors testing")),  # the shipped test kit never drives a real run
    "demo": Layer(_names("core errors vcs plan demo")),
    # the web dashboard reads what the CLI's views read, over an ASGI stack; it never runs a session itself
    "web": Layer(_names("core errors runtime store ui vcs web"), third_party=_names("starlette uvicorn")),
    # attempts on other machines (a Ray cluster): the workspace half of runtime, hosted on each node
    "cluster": Layer(_names("core agents vcs errors runtime cluster"), third_party=_names("ray psutil")),
    "api": Layer(None),
    "__init__": Layer(None),  # the public facade re-exports api, plan and run results
    "__main__": Layer(None),
    "cli": Layer(None, third_party=_names("click rich")),
}
CLI_USERS = _names("cli __main__")  # the composition root is imported by nothing but its own entry points

# Starting a process is runtime.process's job (agents, verify), git.py's (the one git runner) and the test kit's.
SPAWN_MODULES = ("subprocess", "asyncio.subprocess", "pty", "multiprocessing",
                 "concurrent.futures.process", "concurrent.futures.ProcessPoolExecutor")
SPAWN_OS = ("system", "popen", "exec", "spawn", "posix_spawn", "fork")  # prefixes of os.* functions
SPAWN_CALLS = _names("create_subprocess_exec create_subprocess_shell subprocess_exec subprocess_shell")
SHELL_CALLS = _names("create_subprocess_shell subprocess_shell")


def may_spawn(rel: str) -> bool:
    return rel in ("runtime/process.py", "vcs/git.py") or rel.startswith("testing/")


COMPUTED = "<computed name>"  # importlib.import_module(some_variable): nothing can be checked, so it is a violation


# --- where a module's imports point ---------------------------------------------------------------------------

def layer_of(rel: str) -> str:
    first = rel.split("/")[0]
    return first.removesuffix(".py")


def package_parts(rel: str) -> list[str]:
    """The package relative imports resolve against: `core/graph.py` and `core/__init__.py` are in orchard.core."""
    return ["orchard", *rel.removesuffix(".py").split("/")][:-1]


def absolute(rel: str, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    package = package_parts(rel)
    if level > len(package):  # Python refuses this import; keep the dots so it is reported, not misread
        return "." * level + (module or "")
    return ".".join(package[: len(package) - level + 1] + ([module] if module else []))


def bindings(rel: str, tree: ast.AST) -> dict[str, str]:
    """Local names bound to modules (or module attributes), so `import os as o; o.fork()` reads as os.fork."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound.update({alias.asname: alias.name for alias in node.names if alias.asname})
        elif isinstance(node, ast.ImportFrom):
            base = absolute(rel, node.module, node.level)
            bound.update({alias.asname or alias.name: f"{base}.{alias.name}" for alias in node.names})
    return bound


def dotted(node: ast.expr, bound: Mapping[str, str]) -> str:
    if isinstance(node, ast.Name):
        return bound.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value, bound)}.{node.attr}"
    return "(…)"  # a call or subscript result: the attribute names after it still tell what is used


def dynamic_import(call: ast.Call, bound: Mapping[str, str]) -> str | None:
    """The module `importlib.import_module(…)` or `__import__(…)` loads, COMPUTED if not a literal."""
    if dotted(call.func, bound) not in ("importlib.import_module", "__import__"):
        return None
    given = {k.arg: k.value for k in call.keywords}
    positional: list[ast.expr | None] = [*call.args, None, None]
    name, package = given.get("name", positional[0]), given.get("package", positional[1])
    if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
        return COMPUTED
    if not name.value.startswith("."):
        return name.value
    if isinstance(package, ast.Constant) and isinstance(package.value, str):
        return importlib.util.resolve_name(name.value, package.value)
    return COMPUTED


def imports(rel: str, tree: ast.AST, bound: Mapping[str, str]) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of every import at any depth: functions, classes, TYPE_CHECKING, try.

    `from a import b` yields a.b: b is a submodule or an attribute of a, and either way a.b names what is used
    (`from orchard import runtime` is orchard.runtime, `from os import execv` is os.execv).
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = absolute(rel, node.module, node.level)
            yield from ((node.lineno, base if a.name == "*" else f"{base}.{a.name}") for a in node.names)
        elif isinstance(node, ast.Call) and (name := dynamic_import(node, bound)):
            yield node.lineno, name


def references(tree: ast.AST, bound: Mapping[str, str]) -> Iterator[tuple[int, str]]:
    """(line, resolved dotted name) of every attribute access, such as os.system or asyncio.create_subprocess_exec."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            yield node.lineno, dotted(node, bound)


# --- the rules -------------------------------------------------------------------------------------------------

def within(name: str, prefixes: frozenset[str] | tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def orchard_problem(layer: str, rule: Layer, name: str) -> str | None:
    parts = name.split(".")
    target = parts[1] if len(parts) > 1 else "__init__"  # plain `import orchard` runs the facade, which loads all
    if target == "cli" and layer not in CLI_USERS:
        return f"imports `{name}` — nothing outside cli and __main__ imports the CLI"
    if rule.orchard is None or target in rule.orchard:
        return None
    allowed = ", ".join(sorted(rule.orchard)) or "nothing"
    return f"imports `{name}` — {layer} may import only orchard packages: {allowed}"


def import_problem(layer: str, rule: Layer, name: str) -> str | None:
    top = name.split(".")[0]
    if name == COMPUTED:
        return f"imports `{name}` — only literal module names can be checked"
    if top == "orchard":
        return orchard_problem(layer, rule, name)
    if top in sys.stdlib_module_names:
        if rule.stdlib is None or within(name, rule.stdlib):
            return None
        return f"imports `{name}` — not on {layer}'s stdlib allowlist"
    if top in rule.third_party:
        return None
    return f"imports `{name}` — third-party `{top}` is not allowed in {layer}"


def layer_problems(rel: str, names: list[tuple[int, str]]) -> Iterator[str]:
    layer = layer_of(rel)
    rule = RULES.get(layer)
    if rule is None:
        yield f"{rel}:1: package `{layer}` has no layering rule — add one to RULES"
        return
    for line, name in names:
        if problem := import_problem(layer, rule, name):
            yield f"{rel}:{line}: {problem}"


def spawns(name: str) -> bool:
    head, _, attr = name.partition(".")
    return (within(name, SPAWN_MODULES) or name.rsplit(".", 1)[-1] in SPAWN_CALLS
            or (head in ("os", "posix") and "." not in attr and attr.startswith(SPAWN_OS)))


def spawn_problems(rel: str, refs: list[tuple[int, str]]) -> Iterator[str]:
    if may_spawn(rel):
        return
    seen: set[int] = set()  # one finding per line: `asyncio.subprocess.PIPE` is two attribute nodes
    for line, name in refs:
        if spawns(name) and line not in seen:
            seen.add(line)
            yield f"{rel}:{line}: spawns via `{name}` — only runtime/process.py, vcs/git.py and testing/ may"


def shell_problems(rel: str, tree: ast.AST, refs: list[tuple[int, str]]) -> Iterator[str]:
    """No shell anywhere, not even where spawning is allowed: argv lists only, prompts are never parsed."""
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "shell":
            yield f"{rel}:{node.value.lineno}: passes `shell=` — argv lists only"
    for line, name in refs:
        if name in ("os.system", "os.popen") or name.rsplit(".", 1)[-1] in SHELL_CALLS:
            yield f"{rel}:{line}: uses a shell via `{name}` — argv lists only"


def shape_problems(rel: str, source: str, tree: ast.Module) -> Iterator[str]:
    if (count := len(source.splitlines())) > MAX_LINES:
        yield f"{rel}:1: has {count} lines — modules stay under {MAX_LINES}"
    if ast.get_docstring(tree) is None:
        yield f"{rel}:1: has no docstring saying its role"


def check(rel: str, source: str) -> list[str]:
    """Every violation in the module at `rel` (relative to src/orchard, e.g. "core/graph.py") with `source`."""
    tree = ast.parse(source, filename=rel)
    bound = bindings(rel, tree)
    names = list(imports(rel, tree, bound))
    refs = names + list(references(tree, bound))
    found = [*layer_problems(rel, names), *spawn_problems(rel, refs), *shell_problems(rel, tree, refs),
             *shape_problems(rel, source, tree)]
    unique = dict.fromkeys(found)  # an import seen as import and as reference is still one problem
    return sorted(unique, key=lambda v: int(v.split(":")[1]))


# --- the real tree -----------------------------------------------------------------------------------------------

MODULES = sorted(p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("rel", MODULES)
def test_real_module_keeps_the_rules(rel: str) -> None:
    found = check(rel, (SRC / rel).read_text())
    assert not found, "\n".join(found)


# --- mutants: a real module plus one offending line, which the checker must name -------------------------------

@dataclass(frozen=True)
class Mutant:
    """A real module with `code` appended; `token` is the name a violation must quote (`…`) at those lines."""

    rel: str
    code: str
    token: str

    def build(self) -> tuple[str, int]:
        """The mutated source and the first line number of the appended code."""
        real = (SRC / self.rel).read_text().rstrip("\n")
        return f"{real}\n{self.code}\n", len(real.splitlines()) + 1


def violations_from(mutant: Mutant) -> list[str]:
    source, first = mutant.build()
    return [v for v in check(mutant.rel, source) if int(v.split(":")[1]) >= first]


MUTANTS = [
    # the required ones
    Mutant("core/graph.py", "import os", "os"),
    Mutant("core/model.py", "import rich", "rich"),
    Mutant("agents/claude.py", "import subprocess", "subprocess"),
    Mutant("core/scheduler.py", "from orchard import runtime", "orchard.runtime"),
    Mutant("testing/script.py", "from orchard.runtime import engine", "orchard.runtime.engine"),
    Mutant("core/graph.py", "import orchard.store.store", "orchard.store.store"),
    Mutant("core/graph.py", "from ..store import store", "orchard.store.store"),
    Mutant("core/events.py", "def f():\n    from orchard import vcs", "orchard.vcs"),
    Mutant("store/store.py", 'def f():\n    os.system("true")', "os.system"),
    Mutant("plan/raw.py", "import asyncio.subprocess", "asyncio.subprocess"),
    Mutant("api.py", "from orchard.cli import main", "orchard.cli.main"),
    Mutant("runtime/engine.py", 'async def f():\n    await asyncio.create_subprocess_exec("true")',
           "asyncio.create_subprocess_exec"),
    Mutant("core/graph.py", 'importlib.import_module("orchard.runtime")', "orchard.runtime"),
    Mutant("ui/lines.py", "from os import execv", "os.execv"),
    # every other import form, at every depth
    Mutant("core/graph.py", "import sqlite3 as db", "sqlite3"),
    Mutant("core/graph.py", "import orchard", "orchard"),
    Mutant("core/graph.py", '__import__("time")', "time"),
    Mutant("core/graph.py", 'importlib.import_module(".runtime", "orchard")', "orchard.runtime"),
    Mutant("core/graph.py", 'importlib.import_module(".store", package="orchard")', "orchard.store"),
    Mutant("core/graph.py", "def f(name: str) -> None:\n    importlib.import_module(name)", COMPUTED),
    Mutant("core/graph.py", "class C:\n    import asyncio", "asyncio"),
    Mutant("core/model.py", "if TYPE_CHECKING:\n    from orchard.store import Store", "orchard.store.Store"),
    Mutant("core/model.py", "try:\n    import yaml\nexcept ImportError:\n    pass", "yaml"),
    Mutant("core/__init__.py", "from .. import runtime", "orchard.runtime"),
    Mutant("core/graph.py", "from os import path", "os.path"),
    # the other layers
    Mutant("errors.py", "from orchard.core import model", "orchard.core.model"),
    Mutant("errors.py", "import yaml", "yaml"),
    Mutant("testing/script.py", "from orchard.store import Store", "orchard.store.Store"),
    Mutant("agents/base.py", "from orchard.vcs import git", "orchard.vcs.git"),
    Mutant("store/store.py", "from orchard import ui", "orchard.ui"),
    Mutant("ui/lines.py", "import click", "click"),
    Mutant("plan/raw.py", "import orchard.cli", "orchard.cli"),
    Mutant("demo/plan_text.py", "from orchard.runtime.session import start_run", "orchard.runtime.session.start_run"),
    # spawning and shells
    Mutant("vcs/land.py", "import subprocess", "subprocess"),
    Mutant("runtime/attempt.py", "from multiprocessing import Process", "multiprocessing.Process"),
    Mutant("plan/readers.py", "import pty", "pty"),
    Mutant("agents/claude.py", "import asyncio.subprocess as sp", "asyncio.subprocess"),
    Mutant("runtime/engine.py", "from asyncio import create_subprocess_exec", "asyncio.create_subprocess_exec"),
    Mutant("ui/report.py", "from concurrent.futures import ProcessPoolExecutor",
           "concurrent.futures.ProcessPoolExecutor"),
    Mutant("demo/agent.py", 'def f():\n    os.posix_spawn("x", [], {})', "os.posix_spawn"),
    Mutant("cli/common.py", "def f():\n    import os as o\n    o.fork()", "os.fork"),
    Mutant("ui/dashboard.py", 'async def f(loop):\n    await loop.subprocess_exec(None, "x")', "loop.subprocess_exec"),
    Mutant("runtime/process.py", 'def f():\n    subprocess.run("x", shell=True)', "shell="),
    Mutant("vcs/git.py", "def f():\n    os.popen('x')", "os.popen"),
]


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: f"{m.rel}:{m.code.splitlines()[-1].strip()}")
def test_checker_names_the_mutation(mutant: Mutant) -> None:
    found = violations_from(mutant)
    assert any(f"`{mutant.token}`" in v for v in found), found


# What the rules allow must stay allowed, or the checker would only be proven strict, not right.
ALLOWED = [
    Mutant("core/graph.py", "from . import model", ""),
    Mutant("core/graph.py", "from collections import abc\nimport posixpath", ""),
    Mutant("plan/raw.py", "from ..core import model\nimport yaml", ""),
    Mutant("cli/common.py", "if TYPE_CHECKING:\n    from orchard.runtime import engine", ""),
    Mutant("api.py", "from orchard import runtime", ""),
    Mutant("__main__.py", "from orchard.cli import main", ""),
    Mutant("runtime/process.py", "import subprocess", ""),
    Mutant("vcs/git.py", "import subprocess", ""),
    Mutant("testing/agents.py", "import pty", ""),
    Mutant("ui/lines.py", "from rich.text import Text\nimport os\nos.getpid()", ""),
    Mutant("runtime/session.py", "import psutil", ""),
]


@pytest.mark.parametrize("mutant", ALLOWED, ids=lambda m: f"{m.rel}:{m.code.splitlines()[0]}")
def test_checker_allows_what_the_rules_allow(mutant: Mutant) -> None:
    assert violations_from(mutant) == []


# The run journal is the only writer of state: the store's write methods are called by its transitions alone.
RECORD_WRITES = frozenset({"add_run", "save_run", "save_task", "add_attempt", "save_attempt", "add_event",
                           "save_plan", "add_request", "close_request"})
RECORD_WRITERS = frozenset({"core/transitions.py", "core/gate_transitions.py", "core/control_transitions.py",
                            "store/store.py", "testing/memory.py", "core/journal.py"})


def record_writes(source: str) -> list[int]:
    """Lines that call a `Records` write method (`x.save_task(...)` and the like)."""
    return [node.lineno for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr in RECORD_WRITES]


def test_only_the_journal_writes_records() -> None:
    writers = {rel: lines for rel in MODULES if rel not in RECORD_WRITERS
               and (lines := record_writes((SRC / rel).read_text()))}
    assert not writers, f"state written around the journal: {writers}"
    mutant = (SRC / "runtime/merging.py").read_text() + "\ndef f(ctx):\n    ctx.journal.records.save_task(None)\n"
    assert record_writes(mutant), "the check must see a write added outside the journal"
