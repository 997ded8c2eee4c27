"""The bubblewrap sandbox (real bwrap, real processes, real git): what a confined agent can and cannot do.

The hostile agent (tests/agents/escape_agent.py) records each attempt in its worktree; orchard commits that file, so
the test reads what the agent saw from the integration branch, and checks the host side independently.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import psutil
import pytest

from orchard.runtime.sandbox import bwrap_problem
from tests.conftest import PYTHON, RENDEZVOUS, agent_block, git, run_orchard, wait_for
from tests.test_engine_acceptance import checkout_state, plan_text, task

ESCAPE = Path(__file__).parent / "agents" / "escape_agent.py"


@pytest.fixture(autouse=True)
def _bwrap_works() -> None:
    """These tests need bubblewrap: `make test` installs it; anywhere else a missing one fails with how to get it."""
    problem = bwrap_problem()
    assert problem is None, f"the sandbox tests need a working bubblewrap: {problem}"


def escape_plan(tmp_path: Path, targets: Mapping[str, object], *, head: str = "") -> Path:
    spec = tmp_path / "targets.json"
    spec.write_text(json.dumps(targets))
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"{head}defaults: {{retries: 0}}\nagents:\n"
                    f'  escape: {{type: command, command: ["{PYTHON}", "{ESCAPE}", "{spec}"]}}\n'
                    "tasks:\n  - {id: esc, prompt: go, agent: escape}\n")
    return plan


def seen_by_agent(repo: Path) -> dict[str, str]:
    run = run_orchard("status", "--json", cwd=repo).json()["run"]["id"]
    return dict(json.loads(git(repo, "show", f"orchard/{run}/integration:escape.json")))


def test_a_sandboxed_agent_writes_its_worktree_and_nothing_else(repo: Path, tmp_path: Path) -> None:
    (repo / "mine.txt").write_text("the user's own work\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("not the agent's\n")
    orchard_dir = repo / ".orchard"
    run_orchard("run", str(write_trivial(tmp_path)), cwd=repo)  # .orchard and orchard's repository exist now
    own = orchard_dir / "git"
    protected = [repo / "mine.txt", repo / "README.md", outside, orchard_dir / "state.db", own / "config",
                 own / "hooks" / "post-commit", own / "info" / "attributes", repo / ".git" / "config",
                 repo / ".git" / "hooks" / "post-commit", Path.home() / ".bashrc"]
    unchanged = [p for p in protected if p.name != "state.db"]  # orchard itself writes the store as the run goes
    before = {p: p.read_bytes() if p.exists() else None for p in unchanged}
    checkout = checkout_state(repo)
    targets = {"files": [*map(str, protected), "/tmp/sandbox-private.txt", "escape-local.txt"],
               "refs": ["refs/heads/main", "refs/heads/orchard/x/integration"]}
    result = run_orchard("run", str(escape_plan(tmp_path, targets)), cwd=repo)
    assert result.code == 0, result.out
    seen = seen_by_agent(repo)
    for path in protected:
        assert seen[str(path)].startswith("refused: Read-only file system"), (path, seen[str(path)])
    assert seen["refs/heads/main"].startswith("refused") and seen["refs/heads/orchard/x/integration"].startswith(
        "refused")
    assert seen["escape-local.txt"] == "written" and seen["/tmp/sandbox-private.txt"] == "written"
    assert not Path("/tmp/sandbox-private.txt").exists()  # the sandbox's /tmp is its own
    assert {p: p.read_bytes() if p.exists() else None for p in unchanged} == before
    assert checkout_state(repo) == checkout
    assert "(in bwrap)" in next((orchard_dir / "runs").glob("*/logs/esc.1.log")).read_text()


def write_trivial(tmp_path: Path) -> Path:
    plan = tmp_path / "trivial.yaml"
    plan.write_text(plan_text(task("warm", "@write warm.txt w")))
    return plan


def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def test_every_process_a_sandboxed_attempt_started_dies_with_it(repo: Path, tmp_path: Path) -> None:
    marker = f"orchard-daemon-{time.time_ns()}"
    result = run_orchard("run", str(escape_plan(tmp_path, {"daemon": marker})), cwd=repo)
    assert result.code == 0, result.out
    wait_for(lambda: not _marked(marker), "the attempt's setsid and double-forked daemons gone", timeout=10)


def test_a_killed_orchards_sandbox_is_gone_by_the_time_the_run_is_cancelled(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    """bwrap's --die-with-parent usually takes the sandbox down with a killed orchard at once; where it does not (a
    race in bwrap 0.8 seen in about two of five trials here), every process of it carries the run's id, and the
    next `cancel` or `resume` of the run kills them (docs/reliability.md)."""
    marker = f"300.{time.time_ns() % 10**9}"  # a sleep nobody else runs
    agents = agent_block() + f'  sleeper: {{type: command, command: ["/bin/sh", "-c", "sleep {marker}"]}}\n'
    plan = write_plan(plan_text(task("s", "go", "    agent: sleeper\n"), agents=agents))
    proc = subprocess.Popen([PYTHON, "-m", "orchard", "run", str(plan), "--json"], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: bool(_marked(marker)), "the agent running")
        proc.send_signal(signal.SIGKILL)  # no chance to stop anything
        proc.wait(timeout=10)
        cancel = run_orchard("cancel", cwd=repo)
        assert cancel.code == 0, cancel.out + cancel.err
        wait_for(lambda: not _marked(marker), "every process of the sandbox gone", timeout=10)
    finally:
        for leftover in _marked(marker):
            leftover.kill()


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on loopback that accepts and closes connections; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    server.close()


@pytest.mark.parametrize("network", ["host", "none"])
def test_network_none_cuts_a_sandboxed_agent_off(repo: Path, tmp_path: Path, listener: int, network: str) -> None:
    result = run_orchard("run", str(escape_plan(tmp_path, {"connect": ["127.0.0.1", listener]},
                                                head=f"network: {network}\n")), cwd=repo)
    assert result.code == 0, result.out
    seen = seen_by_agent(repo)["connect"]
    assert (seen == "connected") == (network == "host"), seen


def test_planting_in_orchards_git_directory_is_refused_in_the_sandbox(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    marks = RENDEZVOUS / f"marks-{time.time_ns()}"
    result = run_orchard("run", str(write_plan(plan_text(task("planter", f"@plant-git {marks}\n@write p.txt p")))),
                         cwd=repo)
    assert result.code == 1
    status = run_orchard("status", "--json", cwd=repo).json()["tasks"][0]
    assert status["status"] == "failed" and "Read-only file system" in str(status["error"])
    notes = run_orchard("status", "--json", cwd=repo).out
    assert "changed orchard's git directory" not in notes  # nothing to put back
    assert not any(p.is_file() for p in marks.iterdir())  # the programs it did write never ran


def test_a_sandboxed_crash_is_reported_as_the_signal(repo: Path, write_plan: Callable[[str], Path]) -> None:
    result = run_orchard("run", str(write_plan(plan_text(task("segv", "@segv")))), cwd=repo)
    assert result.code == 1
    status = run_orchard("status", "--json", cwd=repo).json()["tasks"][0]
    assert str(status["error"]).startswith("crashed"), status  # bwrap's exit 139 is the SIGSEGV it was


def _path_without_bwrap(tmp_path: Path) -> str:
    """A PATH with git, env and sh but no bwrap (the machine's one stays installed)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "env", "sh"):
        found = shutil.which(tool)
        assert found, f"{tool} is needed"
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.mark.parametrize("mode", ["auto", "bwrap"])
def test_without_bwrap_auto_warns_and_an_explicit_bwrap_is_refused(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path, mode: str) -> None:
    plan = write_plan(f"sandbox: {mode}\n" + plan_text(task("t", "@write t.txt t")))
    result = run_orchard("run", str(plan), cwd=repo, env={"PATH": _path_without_bwrap(tmp_path)})
    if mode == "bwrap":
        output = result.out + result.err
        assert result.code == 3 and "sandbox: bwrap was asked for, but bwrap is not installed" in output, output
        assert "Traceback" not in output
    else:
        assert result.code == 0, result.out
        assert "sandbox: auto runs agents unconfined: bwrap is not installed" in result.out


@pytest.mark.parametrize(("field", "value", "message"), [
    ("sandbox", "workspace-write", "is a codex sandbox"),
    ("sandbox", "docker", "expected one of auto, bwrap, none"),
    ("network", "lan", "expected one of host, none"),
])
def test_sandbox_fields_are_checked(repo: Path, write_plan: Callable[[str], Path], field: str, value: str,
                                    message: str) -> None:
    plan = write_plan(f"{field}: {value}\n" + plan_text(task("t", "@write t.txt t")))
    result = run_orchard("plan", str(plan), cwd=repo)
    output = result.out + result.err
    assert result.code == 2 and message in output and field in output, output


def test_an_agents_writable_paths_must_be_absolute(repo: Path, write_plan: Callable[[str], Path]) -> None:
    agents = f'  fake: {{type: command, command: ["{PYTHON}", "x"], writable: [relative/dir]}}\n'
    result = run_orchard("plan", str(write_plan(plan_text(task("t", "go"), agents=agents))), cwd=repo)
    output = result.out + result.err
    assert result.code == 2 and "writable" in output and "absolute" in output, output


def _made_by(repo: Path, tmp_path: Path, command: list[str]) -> str:
    """Run one task with a command agent `command` (it writes made.txt) and return what it merged."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"agents:\n  a: {{type: command, command: {json.dumps(command)}}}\n"
                    "tasks:\n  - {id: t, prompt: go, retries: 0}\n")
    result = run_orchard("run", str(plan), cwd=repo)
    assert result.code == 0, result.out + result.err
    run = run_orchard("status", "--json", cwd=repo).json()["run"]["id"]
    return git(repo, "show", f"orchard/{run}/integration:made.txt")


def test_an_agent_installed_under_tmp_still_runs_in_the_private_tmp(repo: Path, tmp_path: Path) -> None:
    """The sandbox's /tmp is its own, but a program (or a checkout of orchard) that lives in /tmp stays visible."""
    place = Path(tempfile.mkdtemp(dir="/tmp", prefix="orchard-agent-"))
    try:
        script = place / "agent.py"
        script.write_text("import pathlib; pathlib.Path('made.txt').write_text('made in the sandbox')\n")
        assert _made_by(repo, tmp_path, [PYTHON, str(script)]) == "made in the sandbox"
    finally:
        shutil.rmtree(place, ignore_errors=True)


def test_a_script_whose_interpreter_is_under_tmp_still_runs_in_the_private_tmp(repo: Path, tmp_path: Path) -> None:
    """A launcher script elsewhere whose `#!` interpreter lives in /tmp (a tool's virtualenv there)."""
    place = Path(tempfile.mkdtemp(dir="/tmp", prefix="orchard-interpreter-"))
    try:
        (place / "python").symlink_to(PYTHON)
        launcher = tmp_path / "launch-agent"
        launcher.write_text(f"#!{place / 'python'}\nimport pathlib; pathlib.Path('made.txt').write_text('made')\n")
        launcher.chmod(0o755)
        assert _made_by(repo, tmp_path, [str(launcher)]) == "made"
    finally:
        shutil.rmtree(place, ignore_errors=True)
