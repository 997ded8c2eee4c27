"""The preflight (`preflight:` in the plan; `runtime.preflight`): every distinct verify runs once on the untouched base
before any agent starts. One that cannot run stops the run with exit 3, nothing spent; one red on the base marks the
tasks' failures of it `baseline_red` instead of blaming their agents."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from orchard.runtime.environment import PhaseResult
from orchard.runtime.preflight import verdict_of
from tests.conftest import PYTHON, RENDEZVOUS, query, run_orchard, wait_for
from tests.test_engine_acceptance import plan_text, task


def _verify(code: str) -> str:
    return "    verify: " + json.dumps([PYTHON, "-c", code]) + "\n"


@pytest.mark.parametrize(("verify", "said"), [
    ("    verify: [no-such-test-runner, -q]\n", "no-such-test-runner is not on PATH"),
    ("    verify: [bin/run-tests]\n", "bin/run-tests does not exist"),
    (_verify("import no_such_module_anywhere"), "No module named 'no_such_module_anywhere'"),
], ids=["not-on-path", "missing-in-worktree", "import-error"])
def test_a_verify_that_cannot_run_on_the_base_stops_the_run_with_exit_3_before_any_agent(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path, verify: str, said: str) -> None:
    started = RENDEZVOUS / f"{tmp_path.name}-agent-ran"
    tasks = task("a", f"@touch {started}\n@write a.txt a", verify) + task("b", f"@touch {started}\n@write b.txt b")
    result = run_orchard("run", str(write_plan(plan_text(tasks))), cwd=repo)
    assert result.code == 3, result.out + result.err
    assert said in result.err and "No agent was started" in result.err
    assert "orchard/" not in result.err.partition("Traceback")[2]  # only the verify's own traceback, if any
    assert not started.exists()  # nothing spent
    assert query(repo, "SELECT count(*) FROM attempts") == [(0,)]
    assert query(repo, "SELECT status, reason LIKE 'preflight:%' FROM runs") == [("failed", 1)]
    checked = [json.loads(d) for (d,) in query(repo, "SELECT data FROM events WHERE type = 'preflight.checked'")]
    assert [c["outcome"] for c in checked] == ["cannot_start"]
    again = run_orchard("resume", cwd=repo)  # not past its preflight yet: checked again, still no agent
    assert again.code == 3 and not started.exists(), again.out + again.err


def test_preflight_off_starts_the_agents_whatever_the_verify(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    tasks = task("a", "@write a.txt a", "    verify: [no-such-test-runner]\n")
    result = run_orchard("run", str(write_plan("preflight: off\n" + plan_text(tasks))), cwd=repo)  # YAML's false
    assert result.code == 1  # the agent ran; its verify could not
    assert query(repo, "SELECT count(*) FROM attempts") == [(1,)]
    assert query(repo, "SELECT count(*) FROM events WHERE type = 'preflight.checked'") == [(0,)]


def test_a_verify_red_on_the_base_marks_the_failures_baseline_red_and_not_the_agents_fault(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    red_until_fixed = _verify("import pathlib, sys; sys.exit(0 if pathlib.Path('fixed.txt').exists() else 1)")
    # both start from the base (the barrier), so only the one that fixes it passes
    tasks = (task("fixes", "@barrier both 2\n@write fixed.txt yes", red_until_fixed)
             + task("unrelated", "@barrier both 2\n@write other.txt o", red_until_fixed))
    result = run_orchard("run", str(write_plan(plan_text(tasks, parallel=2))), "--json", cwd=repo)
    assert result.code == 1, result.err
    checked = [e for e in result.ndjson() if e["type"] == "preflight.checked"]
    assert [c["outcome"] for c in checked] == ["red"]  # one distinct verify, run once
    assert checked[0]["ts"] < min(e["ts"] for e in result.ndjson() if e["type"] == "attempt.started")
    [(red,)] = query(repo, "SELECT baseline_red FROM runs")
    assert len(json.loads(red)) == 1
    rows = {t["id"]: t for t in run_orchard("status", "--json", cwd=repo).json()["tasks"]}
    assert rows["fixes"]["status"] == "merged"
    assert rows["unrelated"]["status"] == "failed" and "baseline_red" in str(rows["unrelated"]["error"])
    [(feedback,)] = query(repo, "SELECT feedback FROM tasks WHERE task_id = 'unrelated'")
    assert "already failed on the base branch before any agent" in feedback


def test_a_plan_with_an_unknown_preflight_is_refused_naming_the_field(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    result = run_orchard("plan", str(write_plan("preflight: sometimes\n" + plan_text(task("a", "@write a.txt a")))),
                         cwd=repo)
    assert result.code == 2 and "field 'preflight'" in result.err and "strict" in result.err


@pytest.mark.parametrize(("verify", "code", "expected"), [
    (("pytest", "-q"), 1, "red"),
    (("pytest", "-q"), 2, "cannot_start"),  # collection errors: an import error in the tests or the code
    (("pytest", "-q"), 5, "cannot_start"),  # no tests collected
    ((".venv/bin/python", "-m", "pytest"), 4, "cannot_start"),
    (("make", "test"), 2, "red"),  # make's failure, not a usage error
    (("sh", "-c", "exit 127"), 127, "cannot_start"),
    (("npm", "test"), 1, "red"),
    (("python", "-m", "pytest"), 1, "red"),
])
def test_which_failures_on_the_base_mean_the_verify_cannot_run(verify: tuple[str, ...], code: int,
                                                                expected: str) -> None:
    assert verdict_of(verify, PhaseResult(False, "", exit_code=code)) == expected
    assert verdict_of(verify, PhaseResult(True)) == "passed"


def test_a_python_without_the_module_it_runs_cannot_run_the_verify() -> None:
    missing = PhaseResult(False, "verify failed (exit 1)\n/venv/bin/python: No module named pytest", exit_code=1)
    assert verdict_of(("python", "-m", "pytest", "-q"), missing) == "cannot_start"


def test_a_preflight_a_crash_cut_short_runs_again_on_resume_before_any_agent(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path,
        background: Callable[..., subprocess.Popen[str]]) -> None:
    setting_up, go = RENDEZVOUS / f"{tmp_path.name}-setting-up", RENDEZVOUS / f"{tmp_path.name}-go"
    agent_ran = RENDEZVOUS / f"{tmp_path.name}-agent-ran"
    wait = (f"import pathlib, time; pathlib.Path('{setting_up}').touch(); "
            f"[time.sleep(0.05) for _ in range(1200) if not pathlib.Path('{go}').exists()]")
    setup = json.dumps([[PYTHON, "-c", wait]])
    tasks = task("a", f"@touch {agent_ran}\n@write a.txt a", _verify("pass"))
    plan = write_plan(f"environment:\n  setup: {setup}\n" + plan_text(tasks))
    first = background("run", str(plan))
    wait_for(setting_up.exists, "the preflight's setup running")
    first.send_signal(signal.SIGKILL)  # a crash in the middle of the preflight
    first.wait(timeout=10)
    assert not agent_ran.exists()
    go.touch()
    resumed = run_orchard("resume", "--json", cwd=repo)
    assert resumed.code == 0, resumed.out + resumed.err
    events = [e["type"] for e in resumed.ndjson()]
    assert "preflight.checked" in events and events.index("preflight.checked") < events.index("attempt.started")
    assert not list((repo / ".orchard" / "worktrees").glob("*/.preflight"))  # its hold on a worktree is gone
