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
