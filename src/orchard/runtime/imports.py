"""The editable-install trap: a verify whose Python finds the project's packages outside the task's worktree (an
editable install in the user's own venv points at the user's checkout, a plain one at a copy in site-packages), so it
tests that code and not the task's: a task that breaks the code passes its verify and merges.

Checked without a worktree and without running the tests: the tracked packages' `__init__.py` files are laid out in
a scratch directory as a worktree has them, and the verify's interpreter is asked, from there, where each package
imports from. Only for verify commands whose interpreter can be told (a Python, or a console script such as
`pytest` whose shebang names one); a verify inside the worktree (`.venv/bin/pytest`) has the worktree's own.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from orchard.core.model import Plan
from orchard.errors import GitError, UsageError
from orchard.runtime.process import run_briefly
from orchard.vcs import tracked_matching

NOT_PACKAGES = frozenset({"tests", "test", "testing", "docs", "doc", "examples", "benchmarks", "scripts", "tools"})
PROBE_TIMEOUT_S = 20.0
# Run by the verify's interpreter in the scratch directory: where each named package would import from.
PROBE = """import importlib.util, json, os, sys
cwd_on_path, extra, names = json.loads(sys.argv[1])
if not cwd_on_path:
    sys.path[:] = [p for p in sys.path if p not in ("", ".", os.getcwd())]
sys.path[:0] = extra
found = {}
for name in names:
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        spec = None
    where = spec and (spec.origin or next(iter(spec.submodule_search_locations or ()), None))
    found[name] = os.path.realpath(where) if where else None
print(json.dumps(found))
"""
FIX = ("give each worktree its own venv (environment.setup: [[python3, -m, venv, .venv], [.venv/bin/pip, install, "
       "-e, .]] with verify: [.venv/bin/pytest, -q]), or point pytest at the worktree's code (pythonpath in its "
       "config)")


@dataclass(frozen=True)
class ImportTrap:
    """A verify command whose interpreter imports one of the project's packages from outside the worktree."""

    verify: str
    package: str
    imported_from: str

    def message(self) -> str:
        return (f"verify `{self.verify}` imports {self.package} from {self.imported_from}, outside the task's worktree"
                f" (an install in your environment), so it tests that code, not the task's: {FIX}")


def import_traps(root: Path, plan: Plan) -> list[ImportTrap]:
    """The traps of the plan's distinct verify commands in the checkout at `root` ([] when `preflight: off`)."""
    if plan.preflight == "off":
        return []
    packages = project_packages(root)
    if not packages:
        return []
    found: list[ImportTrap] = []
    for verify in dict.fromkeys(t.verify for t in plan.tasks if t.verify):
        found += _trapped(root, verify, packages)
    return found


def strict_refusal(traps: list[ImportTrap]) -> UsageError:
    """The error `preflight: strict` stops on when any verify would test code outside the worktree (exit 2)."""
    return UsageError("preflight: strict: " + "\n".join(t.message() for t in traps))


def project_packages(root: Path) -> dict[str, str]:
    """The project's top-level packages (`pkg/` or `src/pkg/` with a tracked `__init__.py`) by name, with that
    file's path."""
    try:
        files = tracked_matching(root, ["*/__init__.py", "src/*/__init__.py"])
    except GitError:
        return {}
    return {Path(f).parent.name: f for f in files if Path(f).parent.name not in NOT_PACKAGES
            and Path(f).parent.name.isidentifier()}


def _trapped(root: Path, verify: tuple[str, ...], packages: dict[str, str]) -> list[ImportTrap]:
    interpreter = _interpreter(verify)
    if interpreter is None:
        return []
    python, cwd_on_path = interpreter
    pytest_like = any(Path(arg).name in ("pytest", "py.test") for arg in verify[:3])
    if pytest_like and (root / "conftest.py").is_file():
        cwd_on_path = True  # pytest puts a root conftest.py's directory on sys.path
    extra = pytest_pythonpath(root) if pytest_like else []
    with tempfile.TemporaryDirectory(prefix="orchard-imports-") as scratch:
        where = Path(scratch).resolve()
        for init in packages.values():
            (where / init).parent.mkdir(parents=True, exist_ok=True)
            (where / init).touch()
        args = json.dumps([cwd_on_path, [str(where / p) for p in extra], sorted(packages)])
        ran = run_briefly([python, "-c", PROBE, args], PROBE_TIMEOUT_S, cwd=where)
        try:
            found = json.loads(ran.output) if ran.returncode == 0 else {}
        except ValueError:
            found = {}
    return [ImportTrap(shlex.join(verify), name, origin) for name, origin in sorted(found.items())
            if isinstance(origin, str) and not Path(origin).is_relative_to(where)]


def _interpreter(verify: tuple[str, ...]) -> tuple[str, bool] | None:
    """The Python a verify runs, and whether it puts the working directory on sys.path; None when it cannot be
    told, or when it is the worktree's own (a relative path: `.venv/bin/pytest`)."""
    program = verify[0]
    if "/" in program and not os.path.isabs(program):
        return None
    path = program if os.path.isabs(program) else shutil.which(program)
    if path is None:
        return None
    if Path(program).name.startswith("python"):
        return path, True  # -m, -c and a script in the worktree all put it (or its directory) on sys.path
    shebang = _shebang(Path(path))
    if shebang is None:
        return None
    return shebang, False  # a console script's sys.path starts with its own directory


def _shebang(script: Path) -> str | None:
    """The Python interpreter a script's `#!` line names, if it names one."""
    try:
        with script.open("rb") as fh:
            first = fh.readline(512).decode(errors="replace")
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    if words and Path(words[0]).name == "env" and len(words) > 1:
        words = [shutil.which(words[1]) or words[1]]
    return words[0] if words and Path(words[0]).name.startswith("python") else None


def pytest_pythonpath(root: Path) -> list[str]:
    """The `pythonpath` entries of the repository's pytest configuration (pyproject.toml, pytest.ini, setup.cfg,
    tox.ini), relative to its root."""
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            options = tomllib.loads(pyproject.read_text()).get("tool", {}).get("pytest", {}).get("ini_options", {})
        except (OSError, ValueError):
            options = {}
        value = options.get("pythonpath")
        if value:
            return [str(v) for v in value] if isinstance(value, list) else str(value).split()
    for name, section in (("pytest.ini", "pytest"), ("setup.cfg", "tool:pytest"), ("tox.ini", "pytest")):
        parser = configparser.ConfigParser()
        try:
            parser.read(root / name)
        except configparser.Error:
            continue
        if parser.has_option(section, "pythonpath"):
            return parser.get(section, "pythonpath").split()
    return []
