"""A real Python project run by orchard: a venv made by the environment's setup, the project installed editable with a
console script, kept (`keep: [.venv]`) through the pool's reuse of the worktree by one task after another."""

from __future__ import annotations

import hashlib
import json
import subprocess
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

# The sample project's agent: a module and its test per task, the test checking that `calc` imports from the
# worktree's source (through the venv's editable install: not a copy installed in the venv, not another checkout);
# `bump` changes pyproject.toml (the setup input); the test of `after-bump` also checks that the venv's installed
# metadata is the bumped one, which only setup run again in its worktree makes it.
WRITER = """import os, pathlib
task = os.environ["ORCHARD_TASK_ID"]
if task == "bump":
    p = pathlib.Path("pyproject.toml")
    p.write_text(p.read_text().replace('version = "1.0"', 'version = "1.1"'))
else:
    name = task.replace("-", "_")
    pathlib.Path("src/calc", name + ".py").write_text("def value():\\n    return %d\\n" % len(name))
    check = "    assert version('calc') == '1.1'\\n" if task == "after-bump" else ""
    pathlib.Path("tests", "test_" + name + ".py").write_text(
        "import os\\nfrom importlib.metadata import version\\n\\nimport calc\\nfrom calc import %s as m\\n\\n\\n"
        "def test_value():\\n    assert m.value() == %d\\n"
        "    assert calc.__file__ == os.path.join(os.getcwd(), 'src', 'calc', '__init__.py')\\n%s"
        % (name, len(name), check))
"""
# A setup command after the recipe's: one line per setup that really ran, wherever it ran (the preflight's too, which
# the journal records as no attempt's), with the worktree and the hash of the pyproject.toml it set up.
TALLY = ("import hashlib, json, os, pathlib, sys\n"
         "digest = hashlib.sha256(pathlib.Path('pyproject.toml').read_bytes()).hexdigest()\n"
         "with open(sys.argv[1], 'a') as out:\n"
         "    out.write(json.dumps({'cwd': os.getcwd(), 'pyproject': digest}) + '\\n')\n")
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


def venv_recipe(wheels: Path, tally: Path | None = None) -> str:
    """The README's per-worktree venv recipe, offline: pytest from the wheelhouse, the project editable (and, with
    `tally`, a line appended to that file by each setup that ran to its end)."""
    setup = [[PYTHON, "-m", "venv", ".venv"],
             [".venv/bin/python", "-m", "pip", "install", *PIP_QUIET, "--find-links", str(wheels), "pytest"],
             [".venv/bin/python", "-m", "pip", "install", *PIP_QUIET, "--no-build-isolation", "-e", "."]]
    if tally is not None:
        setup.append([PYTHON, "-c", TALLY, str(tally)])
    return (f"environment:\n  setup: {json.dumps(setup)}\n  setup_inputs: [pyproject.toml]\n  keep: [.venv]\n"
            f"  setup_timeout: 5m\ndefaults:\n  verify: [.venv/bin/pytest, -q]\n")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_python_project_set_up_once_per_worktree_merges_8_tasks_verified_by_its_own_pytest(
        tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    """8 tasks at parallel 2, each verified by the real pytest of a venv its worktree's setup made: setup runs once
    per worktree (a kept `.venv`, unchanged `setup_inputs`), again only where a start commit changed
    pyproject.toml."""
    wheels = wheelhouse()
    repo = calc_repo(tmp_path / "calc")
    # the tests need the install: the project's own tests fail from an interpreter where calc is not installed
    bare = subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=repo, capture_output=True,
                          text=True, timeout=120)
    assert bare.returncode != 0 and "No module named 'calc'" in bare.stdout, bare.stdout + bare.stderr
    tally = tmp_path / "tally" / "setups.jsonl"
    tally.parent.mkdir()
    names = [f"t{i}" for i in range(6)]
    tasks = "".join(task(name, "add a module and its test") for name in names)
    tasks += task("bump", "bump the version", f"    depends_on: [{', '.join(names)}]\n")
    tasks += task("after-bump", "add a module and its test", "    depends_on: [bump]\n")
    agents = (f'agents:\n  writer: {{type: command, command: ["{PYTHON}", "-c", {json.dumps(WRITER)}], '
              f'writable: ["{tally.parent}"]}}\n')
    recipe = venv_recipe(wheels, tally).replace("defaults:\n", "defaults:\n  agent: writer\n  retries: 0\n")
    plan = write_plan(f"parallel: 2\n{recipe}{agents}tasks:\n{tasks}")
    result = run_orchard("run", str(plan), cwd=repo, timeout=600)
    assert result.code == 0, result.out + result.err
    rows = run_orchard("status", "--json", cwd=repo).json()["tasks"]
    assert sorted(t["id"] for t in rows if t["status"] == "merged") == sorted([*names, "bump", "after-bump"])
    attempts = query(repo, "SELECT task_id, number, worktree, start_commit, end_commit, setup_skipped, log_path "
                           "FROM attempts ORDER BY id")
    assert sorted(a[0] for a in attempts) == sorted([*names, "bump", "after-bump"])  # one attempt each
    worktrees = {a[2] for a in attempts}
    # what really ran: no worktree set up twice for the same pyproject.toml, every one a worktree tasks used
    setups = [json.loads(line) for line in tally.read_text().splitlines()]
    done = {(s["cwd"], s["pyproject"]) for s in setups}
    assert len(done) == len(setups) <= len(worktrees) + 1, setups  # once per worktree, once more for the bump
    assert {cwd for cwd, _ in done} <= worktrees
    # the journal, attempt by attempt (in the order they started; no two at once in one worktree): setup ran on a
    # worktree's first use or where pyproject.toml at the start commit differs from the previous attempt's there,
    # and was skipped otherwise; skipped or not, the venv serving it was set up from that pyproject.toml
    ran, inputs_before = [], dict[str, str]()
    for task_id, _, where, start, _, skipped, _ in attempts:
        inputs = sha256(git(repo, "show", f"{start}:pyproject.toml"))
        changed = inputs_before.get(where) != inputs  # also on first use: nothing there before
        if skipped:  # on a first use only where the preflight set the worktree up (the tally has it, below)
            assert where not in inputs_before or not changed, f"{task_id}: setup skipped, pyproject.toml changed"
        else:
            assert changed, f"{task_id}: setup ran again in {where}, pyproject.toml unchanged"
        assert (where, inputs) in done, (task_id, where)
        inputs_before[where] = inputs
        if not skipped:
            ran.append(task_id)
    assert "after-bump" in ran and len(ran) <= len(worktrees) + 1, ran
    start = next(a[3] for a in attempts if a[0] == "after-bump")
    assert 'version = "1.1"' in git(repo, "show", f"{start}:pyproject.toml")  # the bump is in its start commit
    assert len(setups) == len(ran) + 1  # and one by the preflight, in the worktree the first task then reused
    events = [json.loads(d) for (d,) in query(repo, "SELECT data FROM events WHERE type = 'setup.finished'")]
    assert sorted((e["task"], e["attempt"], e["skipped"]) for e in events) == sorted(
        (task_id, number, bool(skipped)) for task_id, number, _, _, _, skipped, _ in attempts)
    for task_id, _, _, _, end, _, log_path in attempts:  # verify ran every test of the task's commit, all passed
        count = len(git(repo, "ls-tree", "--name-only", f"{end}:tests").split())
        assert f"\n{count} passed" in Path(log_path).read_text(), (task_id, count)
