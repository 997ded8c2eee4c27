"""A task's environment (`environment:` in a plan; `runtime.environment`): untracked files of the user's checkout
reach every worktree, and never a commit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from orchard.core.model import Environment, Plan
from orchard.core.serialize import plan_from_dict, plan_to_dict
from orchard.plan import load
from tests.conftest import PYTHON, RENDEZVOUS, git, own_git, query, run_orchard, wait_for
from tests.test_engine_acceptance import plan_text, task

CHECK = ("import os, pathlib; p = pathlib.Path; "
         "assert p('.env').read_text() == 'TOKEN=local\\\\n'; "
         "assert p('config/local.dev.json').read_text() == '{}'; "
         "assert os.readlink('config/local.link.json') == '/etc/hostname'; "
         "assert p('notes.local').read_text() == 'mine'")


def test_ignored_files_reach_every_worktree_as_they_are_and_never_a_commit(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    (repo / ".gitignore").write_text(".env\nconfig/local.*.json\n")
    git(repo, "commit", "-qam", "ignore local files")
    (repo / ".env").write_text("TOKEN=local\n")
    (repo / "config").mkdir()
    (repo / "config" / "local.dev.json").write_text("{}")
    os.symlink("/etc/hostname", repo / "config" / "local.link.json")  # points outside: copied as the link
    (repo / "notes.local").write_text("mine")  # not ignored: orchard must still leave it out of commits
    (repo / ".worktreeinclude").write_text("config/local.*.json\n")
    verify = f'    verify: ["{PYTHON}", "-c", "{CHECK}"]\n'
    tasks = (task("plain", "@write a.txt a", verify)
             + task("sneaky", "@git add -f .env notes.local config\n@git commit -q -m sneaky\n@write b.txt b", verify))
    plan = write_plan("environment:\n  include: [.env, notes.local]\n" + plan_text(tasks, parallel=2))
    result = run_orchard("run", str(plan), cwd=repo)
    assert result.code == 0, result.out + result.err
    run = run_orchard("status", "--json", cwd=repo).json()["run"]["id"]
    integration = f"orchard/{run}/integration"
    tree = git(own_git(repo), "ls-tree", "-r", "--name-only", integration).split()
    assert {"a.txt", "b.txt"} <= set(tree)
    local = {".env", "notes.local", "config/local.dev.json", "config/local.link.json"}
    assert not local & set(tree)
    history = git(own_git(repo), "log", "--name-only", "--format=", integration).split()
    assert not local & set(history), "an included file is in the integration branch's history"
    subjects = git(own_git(repo), "log", "--format=%s", integration).splitlines()
    bodies = git(own_git(repo), "log", "--format=%b", integration)
    # only the agent that committed them itself had its commits replaced; orchard's own commit left them out
    assert bodies.count("without the environment's files it committed") == 1
    assert "sneaky" not in subjects  # the agent's own commit is gone from the history


def test_a_bad_environment_block_names_file_task_and_field(repo: Path, write_plan: Callable[[str], Path]) -> None:
    plan = write_plan("environment:\n  include: [../outside]\n  setup: 7\n  ports: -1\n  colour: blue\n"
                      + plan_text(task("t", "go", "    environment: {setup_timeout: soon, env: {A: [1]}}\n")))
    result = run_orchard("plan", str(plan), cwd=repo)
    assert result.code == 2 and "Traceback" not in result.err
    said = result.out + result.err
    for field in ("environment.include", "environment.setup", "environment.ports", "environment.colour",
                  "environment.setup_timeout", "environment.env"):
        assert field in said, (field, said)
    assert "task 't'" in said or "'t'" in said
    assert str(plan) in said


def test_a_tasks_environment_overrides_the_plans_and_survives_the_snapshot(write_plan: Callable[[str], Path]) -> None:
    text = ("environment:\n  include: [.env]\n"
            "agents:\n  a: {type: command, command: [x]}\n"
            "tasks:\n  - {id: one, agent: a, prompt: go}\n"
            "  - {id: two, agent: a, prompt: go, environment: {include: [.env, local.cfg]}}\n")
    plan = load(write_plan(text))
    assert plan.environment_of("one").include == (".env",)
    assert plan.environment_of("two").include == (".env", "local.cfg")
    again = plan_from_dict(plan_to_dict(plan))
    assert again.environment == plan.environment and again.environment_of("two") == plan.environment_of("two")
    full = Environment(include=(".env",), setup=(("make", "deps"),), setup_inputs=("pyproject.toml",), keep=(".venv",),
                       teardown=(("docker", "compose", "down"),), setup_timeout_s=60.0, env=(("A", "{slot}"),),
                       ports=10)
    built = Plan.build(list(plan.tasks), plan.agents, environment=full)
    assert plan_from_dict(plan_to_dict(built)).environment == full


def _py(code: str) -> str:
    """A YAML flow-list command running `code` with this Python."""
    return f'["{PYTHON}", "-c", "{code}"]'


def test_setup_runs_before_the_agent_and_what_it_makes_is_never_committed(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    setup = _py("import pathlib; pathlib.Path('.deps').mkdir(); pathlib.Path('.deps/lib.txt').write_text('ok')")
    check = _py("import pathlib; assert pathlib.Path('.deps/lib.txt').read_text() == 'ok'")
    plan = write_plan(f"environment:\n  setup: [{setup}]\n"
                      + plan_text(task("t", "@write t.txt t", f"    verify: {check}\n")))
    result = run_orchard("run", str(plan), cwd=repo)
    assert result.code == 0, result.out + result.err
    run = run_orchard("status", "--json", cwd=repo).json()["run"]["id"]
    tree = git(own_git(repo), "ls-tree", "-r", "--name-only", f"orchard/{run}/integration").split()
    assert "t.txt" in tree and not [p for p in tree if p.startswith(".deps")]
    log = next((repo / ".orchard" / "runs" / run / "logs").glob("t.1.log")).read_text()
    assert "[orchard: setup" in log


def test_a_setup_that_fails_is_tried_once_more_then_fails_the_task_with_its_output(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    setup = _py("import sys; print('pip exploded: no wheel for numpy'); sys.exit(4)")
    tasks = task("t", "@write t.txt t") + task("child", "@write c.txt c", "    depends_on: [t]\n")
    plan = write_plan(f"environment:\n  setup: [{setup}]\n" + plan_text(tasks))  # retries: 0
    result = run_orchard("run", str(plan), cwd=repo)
    assert result.code == 1
    rows = {t["id"]: t for t in run_orchard("status", "--json", cwd=repo).json()["tasks"]}
    assert rows["t"]["status"] == "failed" and rows["t"]["attempts"] == 2  # once more, no retry used
    assert "pip exploded" in str(rows["t"]["error"]) and "setup failed (exit 4)" in str(rows["t"]["error"])
    assert rows["child"]["status"] == "blocked"


def test_teardown_runs_after_success_a_failed_verify_and_a_timeout(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    marks = RENDEZVOUS / tmp_path.name
    marks.mkdir()
    teardown = _py(f"import os, pathlib; pathlib.Path('{marks}', os.environ['ORCHARD_TASK_ID']).write_text('down')")
    failing = _py("import sys; sys.exit(1)")
    tasks = (task("ok", "@write ok.txt ok") + task("red", "@write red.txt r", f"    verify: {failing}\n")
             + task("slow", "@sleep 60", "    timeout: 2s\n"))
    plan = write_plan(f"environment:\n  teardown: [{teardown}]\n" + plan_text(tasks))
    assert run_orchard("run", str(plan), cwd=repo).code == 1
    assert sorted(p.name for p in marks.iterdir()) == ["ok", "red", "slow"]


SETUP_RECORD = ("import os, pathlib; pathlib.Path('.venv').mkdir(exist_ok=True); "
                "pathlib.Path('.venv/marker').write_text('installed'); "
                "line = ' '.join([os.environ['ORCHARD_TASK_ID'], os.environ['ORCHARD_ATTEMPT'], "
                "pathlib.Path('.git').read_text().split()[-1]]); "
                "open('{log}', 'a').write(line + chr(10))")


def test_a_reused_worktree_keeps_its_setup_and_runs_it_again_only_when_its_inputs_change(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    (repo / "pyproject.toml").write_text("[project]\nname = 'sample'\n")
    git(repo, "add", "pyproject.toml")
    git(repo, "commit", "-qm", "a project")
    runs = RENDEZVOUS / f"{tmp_path.name}-setups"
    setup = _py(SETUP_RECORD.format(log=runs))
    installed = _py("import pathlib; assert pathlib.Path('.venv/marker').read_text() == 'installed'")
    tasks = "".join(task(f"t{i}", f"@write t{i}.txt {i}", f"    verify: {installed}\n") for i in range(6))
    tasks += task("bump", "@write pyproject.toml [project]\\nname = 'sample'\\nversion = '2'",
                  f"    depends_on: [{', '.join(f't{i}' for i in range(6))}]\n")
    tasks += task("after", "@write after.txt a", f"    depends_on: [bump]\n    verify: {installed}\n")
    plan = write_plan(f"environment:\n  setup: [{setup}]\n  setup_inputs: [pyproject.toml]\n  keep: [.venv]\n"
                      + plan_text(tasks, parallel=2))
    result = run_orchard("run", str(plan), cwd=repo)
    assert result.code == 0, result.out + result.err
    setups = [line.split() for line in runs.read_text().splitlines()]
    # the preflight ran the verify on the base first (attempt 0), in a worktree it set up and parked for t0
    assert setups[0][:2] == ["t0", "0"]
    before_bump = [s for s in setups if s[0].startswith("t")]
    worktrees = {where for _, _, where in before_bump}
    assert len(before_bump) == len(worktrees) < 6, setups  # once per worktree, not once per task
    assert [s[0] for s in setups].count("after") == 1  # pyproject.toml changed under it: set up again
    run = run_orchard("status", "--json", cwd=repo).json()["run"]["id"]
    tree = git(own_git(repo), "ls-tree", "-r", "--name-only", f"orchard/{run}/integration").split()
    assert not [p for p in tree if p.startswith(".venv")]
    skipped = sum("[orchard: setup skipped" in log.read_text()
                  for log in (repo / ".orchard" / "runs" / run / "logs").glob("t*.log"))
    assert skipped == 6 - (len(before_bump) - 1)  # every task but those on a worktree the run made after preflight



def test_a_reused_worktree_whose_setup_made_what_keep_does_not_keep_runs_setup_again(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    """The setup's fingerprint is unchanged, but the pool's reset removed the `.venv` it made (no `keep`): skipping
    setup would leave the task without it."""
    (repo / "pyproject.toml").write_text("[project]\nname = 'sample'\n")
    (repo / ".gitignore").write_text(".venv/\n__pycache__/\n")
    git(repo, "add", "pyproject.toml", ".gitignore")
    git(repo, "commit", "-qm", "a project")
    runs = RENDEZVOUS / f"{tmp_path.name}-setups"
    setup = _py(SETUP_RECORD.format(log=runs))
    installed = _py("import pathlib; assert pathlib.Path('.venv/marker').read_text() == 'installed'")
    tasks = task("a", "@write a.txt a", f"    verify: {installed}\n")
    tasks += task("b", "@write b.txt b", f"    depends_on: [a]\n    verify: {installed}\n")
    plan = write_plan(f"environment:\n  setup: [{setup}]\n  setup_inputs: [pyproject.toml]\n"
                      + plan_text(tasks, parallel=1))
    result = run_orchard("run", str(plan), cwd=repo)
    assert result.code == 0, result.out + result.err
    assert [line.split()[0] for line in runs.read_text().splitlines()] == ["a", "a", "b"]  # preflight, a, b
    assert query(repo, "SELECT task_id, setup_skipped FROM attempts ORDER BY id") == [("a", 0), ("b", 0)]

SERVE = """import json, os, pathlib, socket, sys, time
signals = pathlib.Path(sys.argv[1])
server = socket.socket()
server.bind(("127.0.0.1", int(os.environ["ORCHARD_PORT"])))  # EADDRINUSE would end the agent here
server.listen()
mine = {k: os.environ[k] for k in ("ORCHARD_SLOT", "ORCHARD_PORT", "ORCHARD_ROOT", "COMPOSE_PROJECT_NAME", "DB")}
(signals / os.environ["ORCHARD_TASK_ID"]).write_text(json.dumps(mine))
deadline = time.monotonic() + 30  # up while the others of its wave start theirs
wave = int(os.environ["ORCHARD_TASK_ID"][1:]) // 3
while len([p for p in signals.iterdir() if int(p.name[1:]) // 3 == wave]) < 3 and time.monotonic() < deadline:
    time.sleep(0.02)
pathlib.Path("served-" + os.environ["ORCHARD_TASK_ID"] + ".txt").write_text("served")
"""


def test_running_tasks_get_distinct_slots_and_port_blocks_and_their_servers_never_clash(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    signals = RENDEZVOUS / f"{tmp_path.name}-ports"
    signals.mkdir()
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    agents = (f'  fake: {{type: command, command: ["{PYTHON}", "{script}", "{signals}"], '
              f'writable: ["{RENDEZVOUS}"]}}\n')
    tasks = "".join(task(f"s{i}", "serve", "" + (
        "    depends_on: [s0, s1, s2]\n" if i >= 3 else "")) for i in range(6))
    plan = write_plan('environment:\n  ports: 10\n  env: {DB: "app_{slot}_{task_id}"}\n'
                      + plan_text(tasks, parallel=3, agents=agents))
    result = run_orchard("run", str(plan), cwd=repo)
    assert result.code == 0, result.out + result.err
    seen = {p.name: json.loads(p.read_text()) for p in signals.iterdir()}
    assert len(seen) == 6
    for wave in ({"s0", "s1", "s2"}, {"s3", "s4", "s5"}):  # each wave ran at once (they waited for each other)
        slots = {seen[t]["ORCHARD_SLOT"] for t in wave}
        blocks = [range(int(seen[t]["ORCHARD_PORT"]), int(seen[t]["ORCHARD_PORT"]) + 10) for t in wave]
        assert slots == {"0", "1", "2"}
        assert all(a is b or not set(a) & set(b) for a in blocks for b in blocks)
    s0 = seen["s0"]
    assert s0["ORCHARD_ROOT"] == str(repo) and s0["DB"] == f"app_{s0['ORCHARD_SLOT']}_s0"
    assert s0["COMPOSE_PROJECT_NAME"].endswith(f"-{s0['ORCHARD_SLOT']}")


def _teardown_marks(marks: Path) -> str:
    """A teardown writing `<task>.<attempt>` with its slot into `marks` (a rendezvous the sandbox can write)."""
    return _py(f"import os, pathlib; e = os.environ; pathlib.Path('{marks}', e['ORCHARD_TASK_ID'] + '.' + "
               f"e['ORCHARD_ATTEMPT']).write_text(e['ORCHARD_SLOT'] + ' ' + e['COMPOSE_PROJECT_NAME'])")


def test_teardown_runs_after_a_first_ctrl_c_and_after_a_crash_in_the_resume(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path,
        background: Callable[..., subprocess.Popen[str]]) -> None:
    marks, go = RENDEZVOUS / f"{tmp_path.name}-down", RENDEZVOUS / f"{tmp_path.name}-go"
    marks.mkdir()
    tasks = task("s", f"@touch started-s\n@wait-for {go} 60\n@write s.txt s")
    plan = write_plan(f"environment:\n  teardown: [{_teardown_marks(marks)}]\n  ports: 3\n" + plan_text(tasks))

    def running(attempt: int) -> bool:
        return bool(query(repo, "SELECT 1 FROM attempts WHERE task_id = 's' AND number = ? AND pgid > 0", attempt))

    first = background("run", str(plan))
    wait_for(lambda: running(1), "attempt 1 of s running")
    first.send_signal(signal.SIGINT)  # the first Ctrl-C: stop gracefully
    assert first.wait(timeout=60) == 130
    assert (marks / "s.1").read_text().startswith("0 orchard-")
    slot, port = query(repo, "SELECT slot, port FROM attempts WHERE number = 1")[0]
    assert slot == 0 and port is not None  # the reservation is in the store

    second = background("resume")
    wait_for(lambda: running(2), "attempt 2 of s running")
    second.send_signal(signal.SIGKILL)  # a crash: no teardown from the session
    second.wait(timeout=10)
    assert not (marks / "s.2").exists()
    go.touch()
    resume = run_orchard("resume", cwd=repo)
    assert resume.code == 0, resume.out + resume.err
    run = run_orchard("status", "--json", cwd=repo).json()["run"]["id"]
    assert (marks / "s.2").read_text() == f"0 orchard-{run}-0"  # with the slot attempt 2 had
    assert (marks / "s.3").exists()  # and the attempt that finished the task
    events = [json.loads(row[0]) for row in query(repo, "SELECT data FROM events WHERE type = 'teardown.finished'")]
    assert [(e["attempt"], e["recovered"], e["passed"]) for e in events] == [(1, False, True), (2, True, True),
                                                                            (3, False, True)]


def test_setup_is_journaled_with_its_time_and_the_summary_and_status_give_it_per_task(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    setup = _py("import time; time.sleep(0.3)")
    plan = write_plan(f"environment:\n  setup: [{setup}]\n" + plan_text(task("t", "@write t.txt t")))
    assert run_orchard("run", str(plan), cwd=repo).code == 0
    events = [json.loads(row[0]) for row in query(repo, "SELECT data FROM events WHERE type LIKE 'setup.%'")]
    assert [e["type"] for e in events] == ["setup.started", "setup.finished"]
    assert events[0]["command"].endswith("time.sleep(0.3)'") and events[1]["skipped"] is False
    assert events[1]["duration_s"] >= 0.3
    row = run_orchard("status", "--json", cwd=repo).json()["tasks"][0]
    assert row["setup_s"] == round(events[1]["duration_s"], 3)
    summary = json.loads(query(repo, "SELECT data FROM events WHERE type = 'run.finished'")[0][0])["summary"]
    assert summary["setup_by_task"] == {"t": row["setup_s"]} and summary["setups"] == 1
