"""A repository set up for Conductor (`plan.conductor`): its `conductor.json` or `.conductor/settings.toml` scripts
are the setup and teardown of a plan that names none, run with `sh -c` and Conductor's variables set."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from orchard.core.model import Environment
from orchard.core.serialize import plan_from_dict, plan_to_dict
from orchard.plan import load
from orchard.runtime.resources import task_variables
from tests.conftest import PYTHON, RENDEZVOUS, git, own_git, run_orchard
from tests.test_engine_acceptance import plan_text, task

# Setup leaves what Conductor told it in the worktree; verify checks that it ran there, before the agent, with
# Conductor's names for orchard's own values; archive reports from after the attempt.
SETUP = ('mkdir -p .deps && printf "%s\\n%s\\n%s" "$CONDUCTOR_PORT" "$CONDUCTOR_ROOT_PATH" '
         '"$CONDUCTOR_WORKSPACE_NAME" > .deps/conductor')
ARCHIVE = 'printf "%s %s" "$CONDUCTOR_PORT" "$CONDUCTOR_WORKSPACE_PATH" > "{marks}/$ORCHARD_TASK_ID"'
CHECK = ("import os, pathlib; port, root, name = pathlib.Path('.deps/conductor').read_text().split(chr(10)); "
         "assert port == os.environ['ORCHARD_PORT'] == os.environ['CONDUCTOR_PORT'], port; "
         "assert root == os.environ['ORCHARD_ROOT'], root; assert name == os.environ['ORCHARD_TASK_ID'], name")


def _commit(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", *files)
    git(repo, "commit", "-qm", "conductor settings")


def test_a_repository_with_only_a_conductor_json_gets_its_setup_and_archive_run_with_conductor_port(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    marks = RENDEZVOUS / f"{tmp_path.name}-archive"
    marks.mkdir()
    scripts = {"scripts": {"setup": SETUP, "archive": ARCHIVE.format(marks=marks), "run": "npm run dev"}}
    _commit(repo, {"conductor.json": json.dumps(scripts)})
    verify = f'    verify: ["{PYTHON}", "-c", "{CHECK}"]\n'
    plan = write_plan(plan_text(task("a", "@write a.txt a", verify) + task("b", "@write b.txt b", verify),
                                parallel=2))
    shown = run_orchard("plan", str(plan), cwd=repo)
    assert shown.code == 0, shown.err
    assert "setup (from conductor.json): sh -c 'mkdir -p .deps" in shown.out
    assert "teardown (from conductor.json): sh -c 'printf" in shown.out
    assert "ports: 10 per task" in shown.out
    result = run_orchard("run", str(plan), cwd=repo)
    assert result.code == 0, result.out + result.err
    archived = {p.name: p.read_text().split() for p in marks.iterdir()}
    assert sorted(archived) == ["a", "b"]
    ports = sorted(int(port) for port, _ in archived.values())
    assert ports[1] - ports[0] >= 10  # each task had its own block of Conductor's 10
    run = run_orchard("status", "--json", cwd=repo).json()["run"]["id"]
    assert Path(archived["a"][1]).parent.name == "pool"  # CONDUCTOR_WORKSPACE_PATH: the task's worktree
    tree = git(own_git(repo), "ls-tree", "-r", "--name-only", f"orchard/{run}/integration").split()
    assert {"a.txt", "b.txt"} <= set(tree) and not [p for p in tree if p.startswith(".deps")]
    log = (repo / ".orchard" / "runs" / run / "logs" / "a.1.log").read_text()
    assert "[orchard: setup" in log and "sh -c" in log


def test_settings_toml_wins_over_conductor_json_and_the_local_file_over_it(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    _commit(repo, {"conductor.json": json.dumps({"scripts": {"setup": "echo legacy"}}),
                   ".conductor/settings.toml": ('"$schema" = "https://conductor.build/schemas/settings.repo.schema.json"'
                                                '\n[scripts]\nsetup = "pnpm i"\narchive = "./archive.sh"\n'
                                                'run = "pnpm dev"\n[environment_variables]\nA = "shared"\n'
                                                'B = "shared"\n[environment_variables.cloud]\nC = "cloud"\n')})
    (repo / ".conductor" / "settings.local.toml").write_text(
        '[scripts]\nsetup = "pnpm i --offline"\n[environment_variables]\nB = "mine"\n'
        '[environment_variables.local]\nD = "local"\n')
    plan = load(write_plan(plan_text(task("t", "go"))), repo)
    assert plan.environment.setup == (("sh", "-c", "pnpm i --offline"),)
    assert plan.environment.teardown == (("sh", "-c", "./archive.sh"),)
    assert dict(plan.environment.env) == {"A": "shared", "B": "mine", "D": "local"}
    assert plan.environment.source == ".conductor/settings.toml, .conductor/settings.local.toml"
    assert plan.environment.ports == 10
    again = plan_from_dict(json.loads(json.dumps(plan_to_dict(plan))))  # what a resume runs: the scripts as read
    assert again.environment == plan.environment and again.environment_of("t").source == plan.environment.source
    assert load(write_plan(plan_text(task("t", "go"))), None).environment == Environment()  # no repository: none


def test_the_plans_own_setup_and_a_tasks_own_win_over_conductor(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    _commit(repo, {"conductor.json": json.dumps({"scripts": {"setup": "npm i", "archive": "npm run clean"}})})
    tasks = (task("plain", "go") + task("own", "go", "    environment: {setup: [make], include: [.env]}\n")
             + task("include", "go", "    environment: {include: [.env], teardown: [[echo, done]]}\n"))
    plan = load(write_plan("environment:\n  ports: 0\n  env: {A: plan}\n" + plan_text(tasks)), repo)
    assert plan.environment_of("plain").setup == (("sh", "-c", "npm i"),)
    assert plan.environment_of("plain").ports == 0  # the plan said so
    assert plan.environment_of("own") == Environment(include=(".env",), setup=(("make",),), env=(("A", "plan"),))
    included = plan.environment_of("include")
    assert included.setup == (("sh", "-c", "npm i"),) and included.teardown == (("echo", "done"),)
    assert included.include == (".env",) and included.source == "conductor.json"
    for own_setup in ("setup: [[make, deps]]", "setup: []"):
        ours = load(write_plan(f"environment:\n  {own_setup}\n" + plan_text(task("t", "go"))), repo)
        assert ours.environment.source == "" and ours.environment.teardown == ()
        assert ours.environment.setup in ((), (("make", "deps"),))


def test_every_process_of_a_task_gets_conductors_names_whatever_its_setup() -> None:
    found = task_variables(run_id="r1", task_id="t", root="/src/app", worktree="/src/app/.orchard/pool/3f2a",
                           slot=2, port=20010, environment=Environment(setup=(("make",),)))
    assert {k: v for k, v in found.items() if k.startswith("CONDUCTOR_")} == {
        "CONDUCTOR_ROOT_PATH": "/src/app", "CONDUCTOR_WORKSPACE_PATH": "/src/app/.orchard/pool/3f2a",
        "CONDUCTOR_WORKSPACE_NAME": "t", "CONDUCTOR_PORT": "20010"}
    assert "CONDUCTOR_PORT" not in task_variables(run_id="r1", task_id="t", root="/a", worktree="/a/w", slot=0,
                                                  port=None, environment=Environment())


@pytest.mark.parametrize(("name", "text", "field", "message"), [
    ("conductor.json", '{"scripts": {"setup": "npm i",}}', "", "not valid JSON"),
    ("conductor.json", '["npm i"]', "", "expected an object"),
    ("conductor.json", '{"scripts": "npm i"}', "scripts", "expected a table"),
    ("conductor.json", '{"scripts": {"setup": ["npm", "i"], "archive": 3}}', "scripts.setup", "expected a string"),
    (".conductor/settings.toml", '[scripts]\nsetup = "npm i', "", "not valid TOML"),
    (".conductor/settings.toml", "[scripts]\narchive = ['x']\n", "scripts.archive", "expected a string"),
    (".conductor/settings.toml", "[environment_variables]\nPORTS = [1, 2]\n", "environment_variables.PORTS",
     "must be a string"),
])
def test_a_bad_conductor_file_is_a_plan_error_naming_file_and_field(
        repo: Path, write_plan: Callable[[str], Path], name: str, text: str, field: str, message: str) -> None:
    (repo / name).parent.mkdir(exist_ok=True)
    (repo / name).write_text(text)
    result = run_orchard("plan", str(write_plan(plan_text(task("t", "go")))), cwd=repo)
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert str(repo / name) in result.err and message in result.err, result.err
    if field:
        assert f"field '{field}'" in result.err, result.err
    if name == "conductor.json" and field == "scripts.setup":
        assert "field 'scripts.archive'" in result.err  # every bad field, not only the first
