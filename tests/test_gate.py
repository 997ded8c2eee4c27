"""The gated merge train end to end (`runtime.gate`): real git, real pytest as the project's check, the real CLI.

The project is a small Python package whose tests are the check. The semantic conflict: one task renames
`greet` to `hello`, another adds a caller of `greet`; each passes its own verify, together they fail."""

from __future__ import annotations

import io
import json
import signal
import sqlite3
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from orchard.core.events import CheckFinished, CheckStarted
from orchard.ui.dashboard import render
from orchard.ui.snapshot import Snapshot
from tests.conftest import PYTHON, RENDEZVOUS, git, init_repo, query, run_orchard, wait_for
from tests.test_engine_acceptance import plan_text, slow_merges, task

PROJECT = {
    ".gitignore": "__pycache__/\n*.pyc\n",
    "pytest.ini": "[pytest]\npythonpath = .\naddopts = -p no:cacheprovider\n",
    "app/__init__.py": "",
    "app/lib.py": "def greet():\n    return 'hi'\n",
    "tests/test_lib.py": "from app.lib import greet\n\n\ndef test_greet():\n    assert greet() == 'hi'\n",
}
CHECK = f"[{PYTHON}, -m, pytest, -q]"
RENAME = ("@write app/lib.py def hello():\\n    return 'hi'\n"
          "@write tests/test_lib.py from app.lib import hello\\n\\n\\ndef test_hello():\\n    assert hello() == 'hi'")


def caller(wait_for: str = "") -> str:
    """A task adding `shout()`, which calls `greet` (gone after the rename); told by the gate's feedback, it calls
    `hello` instead. `wait_for`: a glob it waits for first (so the rename reaches the gate before it)."""
    wait = f"@wait-for {wait_for}\n" if wait_for else ""
    return (f"{wait}@unless-feedback @write app/extra.py from app.lib import greet\\n\\n\\ndef shout():\\n"
            "    return greet().upper()\n"
            "@if-feedback @write app/extra.py from app.lib import hello\\n\\n\\ndef shout():\\n"
            "    return hello().upper()\n"
            "@write tests/test_extra.py from app.extra import shout\\n\\n\\ndef test_shout():\\n"
            "    assert shout() == 'HI'")


def project(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "project", PROJECT)


def events(repo: Path, kind: str) -> list[dict[str, Any]]:
    return [json.loads(d) for (d,) in query(repo, "SELECT data FROM events WHERE type = ? ORDER BY id", kind)]


def green(repo: Path, commit: str, where: Path) -> bool:
    """Whether the project's tests pass on `commit` (its tree unpacked into `where`)."""
    where.mkdir(parents=True)
    archive = where / "tree.tar"
    archive.write_bytes(subprocess.run(["git", "-C", str(repo), "archive", commit], check=True,
                                       capture_output=True).stdout)
    with tarfile.open(archive) as tar:
        tar.extractall(where / "tree", filter="data")
    return subprocess.run([PYTHON, "-m", "pytest", "-q"], cwd=where / "tree", capture_output=True).returncode == 0


def first_parents(repo: Path, ref: str, base: str) -> list[str]:
    return git(repo, "rev-list", "--first-parent", f"{base}..{ref}").split()


def test_without_the_gate_two_changes_that_pass_alone_leave_the_integration_branch_red(
        tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    repo = project(tmp_path)
    plan = write_plan(f"defaults: {{verify: {CHECK}}}\n" + plan_text(task("rename", RENAME) + task("caller", caller()),
                                                                      parallel=2))
    result = run_orchard("run", str(plan), cwd=repo, timeout=180)
    assert result.code == 0, result.out + result.err  # both passed their own verify and merged
    run = run_orchard("status", "--json", cwd=repo).json()["run"]
    assert not green(repo, f"orchard/{run['id']}/integration", tmp_path / "tip")  # and the project is broken


def test_the_gate_keeps_the_branch_green_and_the_culprit_fixes_its_change_from_the_feedback(
        tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    repo = project(tmp_path)
    after_rename = str(repo / ".orchard" / "runs" / "*" / "logs" / ".gate.1.log")  # the rename's check began
    tasks = (task("rename", RENAME) + task("caller", caller(after_rename), "    retries: 1\n")
             + task("after", "@write after.txt after", "    depends_on: [rename]\n"))
    plan = write_plan(f"integration_verify: {CHECK}\ndefaults: {{verify: {CHECK}}}\n" + plan_text(tasks, parallel=2))
    result = run_orchard("run", str(plan), cwd=repo, timeout=240)
    assert result.code == 0, result.out + result.err
    doc = run_orchard("status", "--json", cwd=repo).json()
    by_id = {t["id"]: t for t in doc["tasks"]}
    assert {t["status"] for t in doc["tasks"]} == {"merged"}
    assert by_id["caller"]["attempts"] == 2 and by_id["rename"]["attempts"] == 1
    assert all(t["gate"] == "passed" for t in doc["tasks"])

    finished = events(repo, "check.finished")
    verdicts = [(tuple(e["tasks"]), e["passed"], tuple(e["failed"])) for e in finished]
    assert (("caller",), False, ("caller",)) in verdicts  # blamed alone, on the tip holding the rename
    assert doc["run"]["checks"]["count"] == len(finished) and doc["run"]["checks"]["failed"] == 1
    reasons = [json.loads(d)["reason"] for (d,) in query(
        repo, "SELECT data FROM events WHERE type = 'task.status' AND task_id = 'caller'")]
    assert "retry after integration_failed" in reasons
    prompt = next((repo / ".orchard" / "runs" / doc["run"]["id"] / "prompts").glob("caller.2.*")).read_text()
    assert "integration check" in prompt and "cannot import name 'greet'" in prompt  # the check's output

    # every position the branch held was a candidate that passed; every commit on it is green
    ref, base = f"orchard/{doc['run']['id']}/integration", git(repo, "rev-parse", "main").strip()
    passed = {e["candidate"] for e in events(repo, "check.started")
              if any(f["check"] == e["check"] and f["passed"] for f in finished)}
    assert git(repo, "rev-parse", ref).strip() in passed
    commits = first_parents(repo, ref, base)
    assert len(commits) == 3
    assert all(green(repo, commit, tmp_path / f"c{i}") for i, commit in enumerate(commits))

    # the dependent started only after its dependency passed the gate
    (after_started,), = query(repo, "SELECT started_at FROM attempts WHERE task_id = 'after'")
    (gate_ts,), = query(repo, "SELECT ts FROM events WHERE type = 'check.finished' AND data LIKE ?",
                        '%"merged": ["rename"%')
    assert after_started >= gate_ts


def check_script(tmp_path: Path, rendezvous: Path, *, hold_first: bool = False, hang_at: int = 0) -> str:
    """An `integration_verify` failing when the candidate holds `bad.txt`. Each run leaves `check-<n>` in
    `rendezvous`; with `hold_first` the first waits for `release` there (so results queue up behind it), and run
    `hang_at` hangs (for a kill to find it checking)."""
    script = tmp_path / "check.py"
    script.write_text(
        "import pathlib, sys, time\n"
        f"rv = pathlib.Path({str(rendezvous)!r})\n"
        "n = len(list(rv.glob('check-*'))) + 1\n"
        "(rv / f'check-{n}').touch()\n"
        "def wait(name, s):\n"
        "    end = time.monotonic() + s\n"
        "    while not (rv / name).exists() and time.monotonic() < end:\n"
        "        time.sleep(0.05)\n"
        f"if n == 1 and {hold_first}:\n"
        "    wait('release', 60)\n"
        f"if n == {hang_at}:\n"
        "    wait('never', 120)\n"
        "bad = pathlib.Path('bad.txt').exists()\n"
        "print('bad.txt breaks the project' if bad else 'all good')\n"
        "sys.exit(1 if bad else 0)\n")
    return f"[{PYTHON}, {script}]"


def checks_dir(tmp_path: Path) -> Path:
    """Where the test's check script leaves its marks: under the rendezvous directory, which the sandbox lets the
    check write."""
    where = RENDEZVOUS / f"{tmp_path.name}-checks"
    where.mkdir()
    return where


def hanging_check(task_id: str, tmp_path: Path, write_plan: Callable[[str], Path],
                  background: Callable[..., subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """`orchard run` of one task behind a gate whose first check hangs; returned once that check runs."""
    rendezvous = checks_dir(tmp_path)
    check = check_script(tmp_path, rendezvous, hang_at=1)
    proc = background("run", str(write_plan(f"integration_verify: {check}\npreflight: off\n"
                                            + plan_text(task(task_id, f"@write {task_id}.txt {task_id}")))))
    wait_for(lambda: (rendezvous / "check-1").exists(), f"{task_id}'s check running")
    return proc


def merged_once(repo: Path, ref: str) -> list[str]:
    """The tasks merged on `ref`'s first-parent history, by their `Orchard-Task` trailers (repeats kept)."""
    log = git(repo, "log", "--first-parent", "--format=%(trailers:key=Orchard-Task,valueonly)", ref)
    return sorted(line for line in log.split() if line)


def reflog_positions(repo: Path, run_id: str) -> list[str]:
    """Every value orchard's integration ref held after its base, from its reflog in orchard's git directory (which
    must be there and end where the ref is: an empty one would prove nothing)."""
    own, ref = repo / ".orchard" / "git", f"refs/heads/orchard/{run_id}/integration"
    positions = git(own, "reflog", "show", "--format=%H", ref).split()
    assert positions and positions[0] == git(own, "rev-parse", ref).strip(), positions
    return positions


def passed_candidates(repo: Path) -> set[str]:
    finished = {e["check"]: e["passed"] for e in events(repo, "check.finished")}
    return {str(e["candidate"]) for e in events(repo, "check.started") if finished.get(e["check"])}


def test_16_good_results_and_a_culprit_finishing_together_take_at_most_9_checks(
        repo: Path, tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    rendezvous = checks_dir(tmp_path)
    tasks = "".join(task(f"g{i:02d}", f"@barrier done 17\n@write g{i:02d}.txt {i}") for i in range(16))
    tasks += task("culprit", "@barrier done 17\n@write bad.txt oops")
    plan = write_plan(f"integration_verify: {check_script(tmp_path, rendezvous)}\nintegration_batch: 8\n"
                      "preflight: off\n" + plan_text(tasks, parallel=17))
    result = run_orchard("run", str(plan), cwd=repo, timeout=300)
    assert result.code == 1, result.out + result.err  # the culprit failed
    doc = run_orchard("status", "--json", cwd=repo).json()
    by_id = {t["id"]: t for t in doc["tasks"]}
    assert [t for t, row in by_id.items() if row["status"] != "merged"] == ["culprit"]
    assert by_id["culprit"]["status"] == "failed" and by_id["culprit"]["gate"] == "failed"
    assert by_id["culprit"]["error"].startswith("integration_failed") and "bad.txt breaks" in by_id["culprit"]["error"]
    (reason,), = query(repo, "SELECT json_extract(data, '$.reason') FROM events WHERE type = 'task.status' "
                             "AND task_id = 'culprit' AND json_extract(data, '$.status') = 'failed'")
    assert reason == "integration_failed"
    started = events(repo, "check.started")
    assert len(started) <= 9, [e["tasks"] for e in started]  # against 17 checked one by one
    assert max(len(e["tasks"]) for e in started) == 8  # batches did form
    shown = [text for (text,) in query(repo, "SELECT json_extract(data, '$.text') FROM events "
                                             "WHERE type = 'agent.activity'")]
    assert "gate: checking with 7 others" in shown  # what the dashboard's rows say while a batch is checked
    assert doc["run"]["checks"]["count"] == len(started)
    ref = f"orchard/{doc['run']['id']}/integration"
    assert merged_once(repo, ref) == sorted(f"g{i:02d}" for i in range(16))
    assert set(reflog_positions(repo, doc["run"]["id"])) <= passed_candidates(repo)


@pytest.mark.parametrize("hang_at", [2, 3], ids=["during-a-check", "during-a-bisection"])
def test_a_kill_during_a_check_resumes_by_checking_the_same_candidate_and_merges_each_result_once(
        hang_at: int, repo: Path, tmp_path: Path, write_plan: Callable[[str], Path],
        background: Callable[..., subprocess.Popen[str]]) -> None:
    rendezvous = checks_dir(tmp_path)
    good = ("a", "b", "c", "d")
    tasks = "".join(task(t, f"@write {t}.txt {t}") for t in good)
    tasks += task("x", f"@wait-for {rendezvous}/check-1\n@write bad.txt oops")  # never the first one checked
    check = check_script(tmp_path, rendezvous, hold_first=True, hang_at=hang_at)
    plan = write_plan(f"integration_verify: {check}\npreflight: off\n" + plan_text(tasks, parallel=5))
    proc = background("run", str(plan))
    wait_for(lambda: (rendezvous / "check-1").exists(), "the first check")
    wait_for(lambda: query(repo, "SELECT count(*) FROM tasks WHERE status = 'merging'") == [(5,)],
             "every result at the gate")
    (rendezvous / "release").touch()  # the other four make one candidate: 3 good and the culprit
    wait_for(lambda: (rendezvous / f"check-{hang_at}").exists(), f"check {hang_at} running", timeout=60)
    proc.kill()  # SIGKILL of the orchestrator while the check runs
    proc.communicate(timeout=30)
    run_id = str(query(repo, "SELECT id FROM runs")[0][0])
    killed = events(repo, "check.started")[-1]
    assert killed["check"] == hang_at and not [e for e in events(repo, "check.finished") if e["check"] == hang_at]
    if hang_at == 3:  # the batch failed, and the check killed was its first half: a bisection
        batch = next(e for e in events(repo, "check.finished") if e["check"] == 2)
        assert not batch["passed"] and set(killed["tasks"]) < set(batch["tasks"])
    gates = {t["id"]: t["gate"] for t in run_orchard("status", "--json", cwd=repo).json()["tasks"]}
    assert all(gates[t] == "waiting" for t in killed["tasks"])  # merging, at the gate
    assert git(repo / ".orchard" / "git", "rev-parse", f"orchard/{run_id}/integration").strip() != killed["candidate"]

    resumed = run_orchard("resume", cwd=repo, timeout=180)
    assert resumed.code == 1, resumed.out + resumed.err  # the culprit failed the gate
    again = next(e for e in events(repo, "check.started") if e["check"] == hang_at + 1)
    assert again["tasks"] == killed["tasks"]  # the same candidate checked again, before anything else
    statuses = dict(query(repo, "SELECT task_id, status FROM tasks"))
    assert statuses == {**dict.fromkeys(good, "merged"), "x": "failed"}
    ref = f"orchard/{run_id}/integration"
    assert merged_once(repo, ref) == sorted(good)  # each good result merged exactly once
    assert set(reflog_positions(repo, run_id)) <= passed_candidates(repo)  # never an unchecked tree


def test_land_takes_a_tip_that_passed_the_gate_and_refuses_one_that_did_not(
        repo: Path, tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    rendezvous = checks_dir(tmp_path)
    plan = write_plan(f"integration_verify: {check_script(tmp_path, rendezvous)}\npreflight: off\n"
                      + plan_text(task("a", "@write a.txt a") + task("b", "@write b.txt b")))
    result = run_orchard("run", str(plan), "--land", cwd=repo, timeout=120)
    assert result.code == 0, result.out + result.err
    (tip,), = query(repo, "SELECT integration_tip FROM runs")
    assert git(repo, "rev-parse", "main").strip() == tip and tip in passed_candidates(repo)  # `run --land` landed it
    own = repo / ".orchard" / "git"
    # a tree nobody checked as the recorded tip: what landing must never take
    unchecked = git(own, "commit-tree", "-p", tip, "-m", "unchecked", f"{tip}^{{tree}}").strip()
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        db.execute("UPDATE runs SET integration_tip = ?", (unchecked,))
    before = git(repo, "rev-parse", "main")
    refused = run_orchard("land", cwd=repo)
    assert refused.code == 1, refused.out + refused.err
    assert "is not a candidate that passed the gate" in refused.err and "Traceback" not in refused.err
    assert git(repo, "rev-parse", "main") == before  # nothing landed
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        db.execute("UPDATE runs SET integration_tip = ?", (tip,))
    landed = run_orchard("land", cwd=repo)
    assert landed.code == 0, landed.err  # the tip that passed: nothing left to land, and no refusal
    assert git(repo, "rev-parse", "main").strip() == tip


def test_the_gate_fields_are_checked_and_shown_by_orchard_plan(repo: Path, write_plan: Callable[[str], Path]) -> None:
    tasks = task("a", "@write a.txt a")
    bad = run_orchard("plan", str(write_plan("integration_batch: 0\nintegration_timeout: soon\n"
                                             + plan_text(tasks))), cwd=repo)
    assert bad.code == 2 and "Traceback" not in bad.err
    for field in ("integration_batch", "integration_timeout", "integration_verify"):  # the last: it is missing
        assert field in bad.err, bad.err
    good = write_plan(f"integration_verify: {PYTHON} -m pytest -q\nintegration_batch: 4\nintegration_timeout: 10m\n"
                      + plan_text(tasks))
    shown = run_orchard("plan", str(good), "--json", cwd=repo).json()["gate"]
    assert shown == {"verify": [PYTHON, "-m", "pytest", "-q"], "timeout_s": 600.0, "batch": 4}
    assert "merges only in a candidate that passes" in run_orchard("plan", str(good), cwd=repo).out


def test_orchard_show_says_what_gate_a_run_has(repo: Path, tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    check = check_script(tmp_path, checks_dir(tmp_path))
    plan = write_plan(f"integration_verify: {check}\nintegration_batch: 3\npreflight: off\n"
                      + plan_text(task("a", "@write a.txt a")))
    assert run_orchard("run", str(plan), cwd=repo).code == 0
    assert run_orchard("show", "--json", cwd=repo).json()["gate"] == {
        "verify": [PYTHON, str(tmp_path / "check.py")], "batch": 3, "timeout_s": 1800.0}
    assert f"gate: {PYTHON} {tmp_path / 'check.py'} (batch 3, each check within 30m00s)" in run_orchard(
        "show", cwd=repo).out


def test_the_dashboard_shows_the_gate_line_with_checks_failures_and_bisections() -> None:
    snap = Snapshot(run_id="r")
    ts = 1000.0
    snap.apply(CheckStarted(run_id="r", ts=ts, check=1, tasks=("a", "b", "c", "d"), candidate="c1" * 20, tip="t" * 40))
    line = render_text(snap, ts + 12)
    assert "gate checking 4 results (12s)" in line and "checks 0" in line
    snap.apply(CheckFinished(run_id="r", ts=ts + 13, check=1, tasks=("a", "b", "c", "d"), passed=False))
    snap.apply(CheckStarted(run_id="r", ts=ts + 14, check=2, tasks=("a", "b"), candidate="c2" * 20, tip="t" * 40))
    line = render_text(snap, ts + 15)
    assert "checking 2 results" in line and "checks 1" in line and "failed 1" in line and "bisections 1" in line


def render_text(snap: Snapshot, now: float) -> str:
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(render(snap, now))
    return console.export_text()


def test_a_resume_puts_back_an_integration_ref_moved_to_a_tree_no_check_passed(
        repo: Path, tmp_path: Path, write_plan: Callable[[str], Path],
        background: Callable[..., subprocess.Popen[str]]) -> None:
    """A ref moved past the journal's record to this run's own-looking merge (its trailers say so) is trusted only
    at a candidate the gate journaled: here the check of `b` was killed, and the ref then moved to a merge of `b`
    nobody checked."""
    proc = hanging_check("b", tmp_path, write_plan, background)
    proc.kill()
    proc.communicate(timeout=30)
    (run_id, tip), = query(repo, "SELECT id, integration_tip FROM runs")
    own, ref = repo / ".orchard" / "git", f"refs/heads/orchard/{run_id}/integration"
    result = git(own, "rev-parse", f"refs/heads/orchard/{run_id}/task/b").strip()
    forged = git(own, "commit-tree", "-p", tip, "-p", result, "-m",
                 f"orchard: merge task b\n\nOrchard-Run: {run_id}\nOrchard-Task: b", f"{result}^{{tree}}").strip()
    git(own, "update-ref", ref, forged, tip)
    resumed = run_orchard("resume", cwd=repo, timeout=120)
    assert resumed.code == 0, resumed.out + resumed.err
    assert [e["tasks"] for e in events(repo, "check.started")] == [["b"], ["b"]]  # checked again, not trusted
    final = git(own, "rev-parse", ref).strip()
    assert final != forged and final in passed_candidates(repo)
    assert merged_once(repo, f"orchard/{run_id}/integration") == ["b"]


def test_a_ctrl_c_during_a_check_blames_nobody_and_the_resume_checks_again(
        repo: Path, tmp_path: Path, write_plan: Callable[[str], Path],
        background: Callable[..., subprocess.Popen[str]]) -> None:
    proc = hanging_check("a", tmp_path, write_plan, background)
    proc.send_signal(signal.SIGINT)  # a graceful stop: the check is stopped, and it is no verdict on `a`
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert query(repo, "SELECT status, error FROM tasks") == [("merging", "")]
    assert events(repo, "check.finished") == []  # stopped, not failed
    resumed = run_orchard("resume", cwd=repo, timeout=120)
    assert resumed.code == 0, resumed.out + resumed.err
    assert [e["passed"] for e in events(repo, "check.finished")] == [True]
    assert query(repo, "SELECT status FROM tasks") == [("merged",)]


def test_a_second_signal_while_a_candidate_is_built_leaves_its_results_merging_for_the_resume(
        repo: Path, tmp_path: Path, write_plan: Callable[[str], Path],
        background: Callable[..., subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """git killed by a hard stop while the gate merges a candidate is no verdict on the result (not a git error)."""
    started = tmp_path / "merge-started"
    shims = tmp_path / "shims"
    shims.mkdir()
    monkeypatch.setenv("PATH", slow_merges(shims, 60, started))  # the candidate's merge-tree hangs until killed
    check = check_script(tmp_path, checks_dir(tmp_path))
    proc = background("run", str(write_plan(f"integration_verify: {check}\npreflight: off\n"
                                            + plan_text(task("m", "@write m.txt m")))))
    wait_for(started.exists, "the candidate's merge running")
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: bool(query(repo, "SELECT 1 FROM events WHERE type = 'run.note' AND message LIKE "
                                      "'interrupted by SIGTERM%'")), "the first signal taken")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert query(repo, "SELECT status, error FROM tasks") == [("merging", "")]
    monkeypatch.undo()
    resumed = run_orchard("resume", cwd=repo, timeout=120)
    assert resumed.code == 0, resumed.out + resumed.err
    assert query(repo, "SELECT status FROM tasks") == [("merged",)]


def test_the_check_worktree_gets_the_plans_environment(
        repo: Path, tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    """Included ignored files and the environment's setup reach the check worktree as they reach a task's: a check
    that needs both passes, so the result merges."""
    (repo / ".gitignore").write_text("__pycache__/\n*.pyc\n.env\nsetup-ran\n")
    git(repo, "commit", "-qam", "ignore .env")
    (repo / ".env").write_text("SECRET=1\n")
    setup = f"[{PYTHON}, -c, \"open('setup-ran', 'w')\"]"
    check = (f"[{PYTHON}, -c, \"import pathlib, sys; sys.exit(not (pathlib.Path('.env').exists() "
             f"and pathlib.Path('setup-ran').exists()))\"]")
    plan = write_plan(f"integration_verify: {check}\npreflight: off\n"
                      f"environment:\n  include: [.env]\n  setup: [{setup}]\n" + plan_text(task("a", "@write a.txt a")))
    result = run_orchard("run", str(plan), cwd=repo)
    assert result.code == 0, result.out + result.err
    assert [e["passed"] for e in events(repo, "check.finished")] == [True]
