"""A real Python project run by orchard: a venv made by the environment's setup, the project installed editable with a
console script, kept (`keep: [.venv]`) through the pool's reuse of the worktree by one task after another."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from orchard.testing.pyproject import PIP_QUIET, package_files, write_files
from tests.conftest import PYTHON, git, init_repo, query, run_orchard
from tests.test_engine_acceptance import plan_text, task

APP = "import pathlib\n\n\ndef main():\n    print('hello from', pathlib.Path(__file__).resolve().parent.parent)\n"

# The agent: runs the venv's console script and asks the venv's interpreter (`-P`: not from the working directory)
# where the project imports from, and commits what it found.
PROBE = """import json, os, pathlib, subprocess, sys
task = os.environ["ORCHARD_TASK_ID"]
def run(*argv):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        return {"code": None, "out": "", "err": str(exc)}
    return {"code": done.returncode, "out": done.stdout.strip(), "err": done.stderr.strip()[-300:]}
found = {"cwd": os.getcwd(), "script": run(".venv/bin/greet"),
         "imports": run(".venv/bin/python", "-P", "-c", "import app; print(app.__file__)")}
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out", task + ".json").write_text(json.dumps(found))
"""


def python_project(root: Path) -> Path:
    """A repository holding an installable project `app` with the console script `greet`."""
    repo = init_repo(root, {".gitignore": ".venv/\n__pycache__/\n"})
    write_files(repo, package_files("app", APP, scripts={"greet": "app:main"}))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "the project")
    return repo


def environment_block() -> str:
    setup = [[PYTHON, "-m", "venv", ".venv"],
             [".venv/bin/python", "-m", "pip", "install", *PIP_QUIET, "--no-build-isolation", "-e", "."]]
    return (f"environment:\n  setup: {json.dumps(setup)}\n  setup_inputs: [pyproject.toml]\n  keep: [.venv]\n"
            f"  setup_timeout: 5m\n")


def test_a_kept_venv_works_in_every_task_the_pooled_worktree_serves(
        tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    """A venv records absolute paths (the editable install's .pth, the console scripts' shebangs): the worktree it
    was made in must keep its path while the pool hands it from task to task."""
    repo = python_project(tmp_path / "project")
    agents = f'  probe: {{type: command, command: ["{PYTHON}", "-c", {json.dumps(PROBE)}]}}\n'
    tasks = (task("t0", "probe the venv") + task("t1", "probe the venv", "    depends_on: [t0]\n")
             + task("t2", "probe the venv", "    depends_on: [t1]\n"))
    plan = write_plan(environment_block() + plan_text(tasks, parallel=1, agents=agents).replace(
        "agent: fake", "agent: probe"))
    result = run_orchard("run", str(plan), cwd=repo)
    assert result.code == 0, result.out + result.err
    run_id = run_orchard("status", "--json", cwd=repo).json()["run"]["id"]
    worktrees = dict(query(repo, "SELECT task_id, worktree FROM attempts"))
    assert len(set(worktrees.values())) == 1  # one worktree served the chain
    skipped = query(repo, "SELECT task_id FROM attempts WHERE setup_skipped = 1 ORDER BY task_id")
    assert skipped == [("t1",), ("t2",)]  # set up once, kept
    for name in ("t0", "t1", "t2"):
        found = json.loads(git(repo, "show", f"orchard/{run_id}/integration:out/{name}.json"))
        assert found["cwd"] == worktrees[name]
        assert found["script"]["code"] == 0, (name, found)  # its shebang names the venv where it still is
        assert found["script"]["out"] == f"hello from {worktrees[name]}", (name, found)
        assert found["imports"]["out"] == f"{worktrees[name]}/app/__init__.py", (name, found)


WHEELS = Path(__file__).resolve().parent.parent / ".tools" / "wheels"

# The sample project's agent: a module and its test per task; `bump` changes pyproject.toml (the setup input).
WRITER = """import os, pathlib
task = os.environ["ORCHARD_TASK_ID"]
if task == "bump":
    p = pathlib.Path("pyproject.toml")
    p.write_text(p.read_text().replace('version = "1.0"', 'version = "1.1"'))
else:
    name = task.replace("-", "_")
    pathlib.Path("src/calc", name + ".py").write_text("def value():\\n    return %d\\n" % len(name))
    pathlib.Path("tests", "test_" + name + ".py").write_text(
        "import os\\nimport calc\\nfrom calc import %s as m\\n\\n\\ndef test_value():\\n    assert m.value() == %d\\n"
        "    assert calc.__file__.startswith(os.getcwd())  # the worktree's code\\n" % (name, len(name)))
"""
CALC = "def add(a, b):\n    return a + b\n"
CALC_TEST = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"


def wheelhouse() -> Path:
    """The pinned pytest wheels `make wheels` (part of `make test`) downloads; a clear failure without them."""
    found = sorted(WHEELS.glob("pytest-*.whl"))
    assert found, f"no pytest wheel in {WHEELS}: run `make wheels` (or `make test`) to fetch the pinned wheels"
    return WHEELS


def calc_repo(root: Path) -> Path:
    """A src-layout project `calc` whose tests import it: only an install puts `src/` on sys.path."""
    repo = init_repo(root, {".gitignore": ".venv/\n__pycache__/\n"})
    write_files(repo, {**package_files("calc", CALC, src_layout=True), "tests/test_calc.py": CALC_TEST})
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "calc")
    return repo


def venv_recipe(wheels: Path) -> str:
    """The README's per-worktree venv recipe, offline: pytest from the wheelhouse, the project editable."""
    setup = [[PYTHON, "-m", "venv", ".venv"],
             [".venv/bin/python", "-m", "pip", "install", *PIP_QUIET, "--find-links", str(wheels), "pytest"],
             [".venv/bin/python", "-m", "pip", "install", *PIP_QUIET, "--no-build-isolation", "-e", "."]]
    return (f"environment:\n  setup: {json.dumps(setup)}\n  setup_inputs: [pyproject.toml]\n  keep: [.venv]\n"
            f"  setup_timeout: 5m\ndefaults:\n  verify: [.venv/bin/pytest, -q]\n")


def test_a_python_project_set_up_once_per_worktree_merges_8_tasks_verified_by_its_own_pytest(
        tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    repo = calc_repo(tmp_path / "calc")
    names = [f"t{i}" for i in range(6)]
    tasks = "".join(task(name, "add a module and its test") for name in names)
    tasks += task("bump", "bump the version", f"    depends_on: [{', '.join(names)}]\n")
    tasks += task("after-bump", "add a module and its test", "    depends_on: [bump]\n")
    agents = f'agents:\n  writer: {{type: command, command: ["{PYTHON}", "-c", {json.dumps(WRITER)}]}}\n'
    recipe = venv_recipe(wheelhouse()).replace("defaults:\n", "defaults:\n  agent: writer\n  retries: 0\n")
    plan = write_plan(f"parallel: 2\n{recipe}{agents}tasks:\n{tasks}")
    result = run_orchard("run", str(plan), cwd=repo, timeout=600)
    assert result.code == 0, result.out + result.err
    rows = run_orchard("status", "--json", cwd=repo).json()["tasks"]
    assert sorted(t["id"] for t in rows if t["status"] == "merged") == sorted([*names, "bump", "after-bump"])
    attempts = query(repo, "SELECT task_id, worktree, setup_skipped FROM attempts ORDER BY id")
    assert len(attempts) == 8  # no retries: every verify passed first time
    worktrees = {where for _, where, _ in attempts}
    ran = [(task_id, where) for task_id, where, skipped in attempts if not skipped]
    before = [where for task_id, where in ran if task_id != "after-bump"]
    assert len(before) == len(set(before)) <= len(worktrees)  # set up at most once per worktree, not per task
    assert ("after-bump" in dict(ran)) and len(ran) <= len(worktrees) + 1  # pyproject.toml changed: again
    finished = query(repo, "SELECT data FROM events WHERE type = 'setup.finished'")
    assert sum(not json.loads(d)["skipped"] for (d,) in finished) == len(ran)
    log = next((repo / ".orchard" / "runs").glob("*/logs/t0.1.log")).read_text()
    assert "passed" in log  # pytest ran the tests in the worktree's venv
