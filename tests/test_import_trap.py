"""The editable-install trap (`runtime.imports`): with the project installed editable in the user's own venv, a
verify run from that venv in a task's worktree would import the package from the user's checkout. `orchard plan`,
`orchard doctor` and `orchard run` say so with the fix; `preflight: strict` refuses to run."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from orchard.testing.pyproject import PIP_QUIET
from tests.conftest import PYTHON, git, query, run_orchard
from tests.test_engine_acceptance import plan_text, task
from tests.test_python_project import calc_repo, venv_recipe, wheelhouse


def user_venv(where: Path, project: Path) -> Path:
    """The user's own venv with the project installed editable, as `pip install -e .` in the checkout leaves it."""
    subprocess.run([PYTHON, "-m", "venv", str(where)], check=True, capture_output=True, timeout=300)
    subprocess.run([str(where / "bin" / "python"), "-m", "pip", "install", *PIP_QUIET, "--no-build-isolation", "-e",
                    str(project)], check=True, capture_output=True, timeout=300, cwd=project)
    return where


def activated(venv: Path) -> dict[str, str]:
    """The environment of a shell with `venv` activated."""
    return {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}


def test_plan_doctor_and_run_warn_of_a_verify_that_imports_the_project_from_the_users_checkout(
        tmp_path: Path, write_plan: Callable[..., Path]) -> None:
    repo = calc_repo(tmp_path / "calc")
    env = activated(user_venv(tmp_path / "uservenv", repo))
    tasks = task("a", "@write notes.txt n", "    verify: [python, -m, pytest, -q]\n")
    plan = write_plan(plan_text(tasks))
    shown = run_orchard("plan", str(plan), cwd=repo, env=env)
    assert shown.code == 0, shown.err
    expected = f"imports calc from {(repo / 'src' / 'calc' / '__init__.py').resolve()}, outside the task's worktree"
    assert expected in shown.out and ".venv/bin/pytest" in shown.out  # with the fix
    assert expected in run_orchard("doctor", str(plan), "--json", cwd=repo, env=env).out
    strict = run_orchard("run", str(write_plan("preflight: strict\n" + plan_text(tasks), "strict.yaml")), cwd=repo,
                         env=env)
    assert strict.code == 2 and expected in strict.err and "Traceback" not in strict.err
    assert not (repo / ".orchard" / "state.db").exists() or query(repo, "SELECT count(*) FROM runs") == [(0,)]
    # without strict the run says so at its start; here its preflight then finds no pytest in that venv at all
    ran = run_orchard("run", str(plan), cwd=repo, env=env)
    assert expected in ran.out and ran.code == 3 and "No module named pytest" in ran.err, ran.out + ran.err
    # the same verify from orchard's own Python, where calc is not installed: nothing to warn of
    clean = run_orchard("plan", str(write_plan(plan_text(task(
        "a", "@write notes.txt n", f"    verify: [{PYTHON}, -m, pytest, -q]\n")), "clean.yaml")), cwd=repo)
    assert clean.code == 0 and "outside the task's worktree" not in clean.out


BREAK = "@write src/calc/__init__.py def add(a, b):\\n    return a - b"


def test_the_trap_merges_a_breaking_task_and_the_per_worktree_venv_recipe_fails_it(
        tmp_path: Path, write_plan: Callable[..., Path]) -> None:
    wheels = wheelhouse()
    repo = calc_repo(tmp_path / "calc")
    venv = user_venv(tmp_path / "uservenv", repo)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", *PIP_QUIET, "--find-links", str(wheels),
                    "pytest"], check=True, capture_output=True, timeout=300)
    env = activated(venv)
    trapped = write_plan(plan_text(task("breaks", BREAK, "    verify: [pytest, -q]\n")), "trapped.yaml")
    ran = run_orchard("run", str(trapped), cwd=repo, env=env, timeout=300)
    assert "outside the task's worktree" in ran.out  # warned at the start, with the fix
    # and this is why: the user's pytest tested the user's checkout, so the broken code passed and merged
    assert ran.code == 0, ran.out + ran.err
    run_id = run_orchard("show", "--json", cwd=repo).json()["id"]
    assert "a - b" in git(repo, "show", f"orchard/{run_id}/integration:src/calc/__init__.py")
    recipe = venv_recipe(wheels).replace("defaults:\n", "defaults:\n  agent: fake\n  retries: 0\n")
    own = write_plan(recipe + plan_text(task("breaks", BREAK)).replace("defaults: {agent: fake, retries: 0}\n", ""),
                     "own.yaml")
    shown = run_orchard("plan", str(own), cwd=repo, env=env)
    assert shown.code == 0 and "outside the task's worktree" not in shown.out
    failed = run_orchard("run", str(own), cwd=repo, env=env, timeout=300)
    assert failed.code == 1, failed.out + failed.err
    rows = {t["id"]: t for t in run_orchard("status", "--json", cwd=repo).json()["tasks"]}
    assert rows["breaks"]["status"] == "failed" and "verify failed" in str(rows["breaks"]["error"])
