"""The layering rules of DESIGN.md and the security basics, checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "orchard"

# package → orchard packages it may import (`errors` is the stdlib-only exception tree every layer may raise)
ALLOWED = {
    "core": {"core", "errors"},
    "plan": {"plan", "core", "errors"},
    "agents": {"agents", "core", "errors"},
    "vcs": {"vcs", "errors"},
    "store": {"store", "core", "errors"},
    "ui": {"ui", "core", "store", "errors"},
    "runtime": {"runtime", "core", "agents", "vcs", "store", "errors"},
}


def orchard_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "orchard" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_layers_import_only_what_they_may() -> None:
    problems = []
    for package, allowed in ALLOWED.items():
        for path in (SRC / package).rglob("*.py"):
            extra = orchard_imports(path) - allowed
            if extra:
                problems.append(f"{path.relative_to(SRC)} imports {sorted(extra)}")
    assert not problems, problems


def test_nothing_imports_the_cli() -> None:
    entry = SRC / "__main__.py"  # `python -m orchard` is the CLI's other entry point
    offenders = [p for p in SRC.rglob("*.py") if "cli" not in p.relative_to(SRC).parts[:1]
                 and p != entry and "cli" in orchard_imports(p)]
    assert not offenders


def test_no_shell_anywhere() -> None:
    hits = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "shell":
                hits.append(f"{path}: shell= keyword")
            if isinstance(node, ast.Attribute) and node.attr in ("create_subprocess_shell", "system", "popen"):
                hits.append(f"{path}: {node.attr}")
    assert not hits, hits


def test_modules_stay_small() -> None:
    big = [f"{p.relative_to(SRC)}: {n}" for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500]
    assert not big, big


def test_every_module_says_its_role() -> None:
    missing = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
               if ast.get_docstring(ast.parse(p.read_text())) is None]
    assert not missing, missing
