"""Crash safety: the orchestrator's whole process group is killed with SIGKILL at 20+ random moments of a 30-task run
and resumed each time.

Every time the run must end with each task merged exactly once (no agent start after its merge, and an agent
started only for a recorded attempt and at most once for it), no commit lost,
the same integration tree as an uninterrupted run, no process of a dead orchestrator left, and no orphan worktree,
task branch or lock.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from orchard.runtime.lock import live_holder
from tests.conftest import (
    PYTHON,
    RENDEZVOUS,
    git,
    init_repo,
    merged_tasks,
    own_git,
    parked_worktrees,
    query,
    run_processes,
)
from tests.test_engine_acceptance import plan_text, task

SEED = int(os.environ.get("ORCHARD_CRASH_SEED", "20261122"))  # another seed explores other kill moments
KILLS = 22


GATE = f"integration_verify: [{PYTHON}, -c, \"import pathlib, sys; sys.exit(pathlib.Path('bad.txt').exists())\"]\n"


def crash_plan(starts: Path, *, gated: bool = False) -> str:
    """30 tasks: chains and fan-in, verify commands, and two tasks that conflict on one line; every agent records
    its start in `starts`. `gated`: behind a merge gate, with one more task whose first attempt breaks the check (so
    there are failing candidates and bisections to kill) until the gate's feedback tells it."""
    rng = random.Random(SEED)
    tasks = ""
    for i in range(28):
        deps = sorted({f"t{j}" for j in range(max(0, i - 6), i) if rng.random() < 0.2})
        extra = f"    depends_on: [{', '.join(deps)}]\n" if deps else ""
        if i % 5 == 0:
            check = f"import pathlib; assert pathlib.Path('out/t{i}.txt').exists()"
            extra += f'    verify: ["{PYTHON}", "-c", "{check}"]\n'
        tasks += task(f"t{i}", f"@record {starts}\n@sleep {rng.uniform(0.05, 0.35):.2f}\n@write out/t{i}.txt task {i}",
                      extra)
    # both edit one line: whichever merges second conflicts (when they overlap) and retries on the new tip; an
    # agent that finds the other's line writes both, so the final tree is the same whatever the timing
    for name, other in (("left", "right"), ("right", "left")):
        tasks += task(name, f"@record {starts}\n@sleep 0.2\n"
                            f"@unless-contains shared.txt {other} @write shared.txt {name}\n"
                            f"@if-contains shared.txt {other} @write shared.txt left\\nright", "    retries: 3\n")
    if gated:
        tasks += task("culprit", f"@record {starts}\n@unless-feedback @write bad.txt oops\n@write out/culprit.txt c",
                      "    retries: 3\n")
    return (GATE if gated else "") + plan_text(tasks, parallel=4)


def new_repo(root: Path) -> Path:
    return init_repo(root, {"README.md": "crash test\n", "shared.txt": "base\n", ".gitignore": "__pycache__/\n"})


def orchard_cmd(repo: Path, *args: str) -> subprocess.Popen[bytes]:
    """orchard in a process group of its own, so a kill can take the whole group (an OOM kill, a closed terminal)."""
    return subprocess.Popen([PYTHON, "-m", "orchard", *args, "--json"], cwd=repo, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def journal(repo: Path) -> list[dict[str, object]]:
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        return [json.loads(r[0]) for r in db.execute("SELECT data FROM events ORDER BY id")]


@pytest.mark.parametrize("gated", [False, True], ids=["merge-queue", "merge-gate"])
def test_sigkill_at_random_moments_then_resume(gated: bool, tmp_path: Path) -> None:
    signals = RENDEZVOUS / tmp_path.name
    signals.mkdir()
    reference_plan, plan = tmp_path / "reference.yaml", tmp_path / "plan.yaml"
    reference_plan.write_text(crash_plan(signals / "reference-starts", gated=gated))
    plan.write_text(crash_plan(signals / "starts", gated=gated))
    total = 31 if gated else 30

    reference = new_repo(tmp_path / "reference")
    assert subprocess.run([PYTHON, "-m", "orchard", "run", str(reference_plan), "--json"], cwd=reference,
                          capture_output=True, timeout=300).returncode == 0
    ref_run = json.loads(subprocess.run([PYTHON, "-m", "orchard", "status", "--json"], cwd=reference,
                                        capture_output=True, text=True).stdout)["run"]["id"]
    expected_tree = git(reference, "rev-parse", f"orchard/{ref_run}/integration^{{tree}}").strip()
    # Kill moments are drawn in the run's progress (steps journaled), not in seconds, so they spread over the whole
    # run whatever this machine's speed: each session is killed after a random share of the work still to do (the
    # reference run's steps, for the tasks not merged yet, over the kills still to land) plus a few milliseconds,
    # which lands kills in start-up, attempts, verify commands, merges and tidy-ups alike.
    steps_per_task = _progress(reference) / total

    repo = new_repo(tmp_path / "crashed")
    rng = random.Random(SEED + 1)
    kills, sessions, in_check = 0, 0, 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        sessions += 1
        left = total - len(query(repo, "SELECT task_id FROM tasks WHERE status = 'merged'"))
        target = _progress(repo) + rng.randint(0, max(2, int(2 * left * steps_per_task / max(1, KILLS - kills))))
        # killed before the run was recorded, there is nothing to resume: the user starts it again
        proc = orchard_cmd(repo, "resume") if _recorded(repo) else orchard_cmd(repo, "run", str(plan))
        if kills >= KILLS:
            break
        while proc.poll() is None and _progress(repo) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            in_check += _checking(repo)
        elif proc.returncode == 0:
            break
    final = proc.wait(timeout=300)
    assert kills >= 20, f"only {kills} kills landed in {sessions} sessions"
    assert final == 0 or _completed(repo), f"the last resume exited {final}"

    events = journal(repo)
    run_id = str(events[0]["run_id"])
    merged: dict[str, int] = {}
    for i, e in enumerate(events):
        if e["type"] == "task.status" and e["status"] == "merged":
            assert e["task"] not in merged, f"{e['task']} merged twice"
            merged[str(e["task"])] = i
        elif e["type"] == "attempt.started":
            assert e["task"] not in merged, f"{e['task']} started again after it merged"
    assert len(merged) == total
    # an agent ran only for an attempt the journal recorded, and at most once for it
    started = Counter(tuple(line.split()) for line in (signals / "starts").read_text().splitlines())
    recorded = {(t, str(n)) for t, n in query(repo, "SELECT task_id, number FROM attempts")}
    assert [k for k, n in started.items() if n > 1] == [] and set(started) <= recorded

    tip = git(repo, "rev-parse", f"orchard/{run_id}/integration").strip()
    assert git(repo, "rev-parse", f"{tip}^{{tree}}").strip() == expected_tree
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        commits = [r[0] for r in db.execute("SELECT merged_commit FROM tasks WHERE run_id = ?", (run_id,))]
    for commit in commits:  # no merge commit was lost from the branch
        assert subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, tip]).returncode == 0
    # and none was made twice: a merge a killed session made but never recorded is found, not repeated
    per_task = sorted(task for _, task in merged_tasks(repo, tip))
    assert per_task == sorted(merged), f"merge commits per task: {per_task}"

    if gated:  # the branch took no position but a candidate orchard built, and never one whose check failed
        positions = set(git(own_git(repo), "reflog", "show", "--format=%H", f"refs/heads/orchard/{run_id}/integration")
                        .split())
        started_checks = {int(str(e["check"])): str(e["candidate"]) for e in events if e["type"] == "check.started"}
        failed = {started_checks[int(str(e["check"]))] for e in events if e["type"] == "check.finished"
                  and not e["passed"]}
        assert positions and positions <= set(started_checks.values()) and not positions & failed
        assert failed, "no candidate failed: the culprit never reached the gate"
        assert in_check, "no kill landed during a check"
        print(f"gated crash test: {kills} kills, {in_check} during a check; {len(started_checks)} checks, "
              f"{len(failed)} failed")
    assert run_processes(run_id) == []
    assert len(parked_worktrees(repo)) <= 4  # only reusable worktrees, parked, at most the run's parallel
    worktrees = repo / ".orchard" / "worktrees" / run_id
    assert not worktrees.exists() or not any(worktrees.iterdir())
    assert git(repo, "branch", "--list", f"orchard/{run_id}/task/*").strip() == ""
    assert not list((repo / ".git").rglob("*.lock")) and not list(own_git(repo).rglob("*.lock"))
    assert live_holder(repo / ".orchard" / "lock") is None


def _progress(repo: Path) -> int:
    """Steps of real work journaled so far: attempts started and finished, verify commands and merges done."""
    rows = query(repo, "SELECT count(*) FROM events WHERE type IN ('attempt.started', 'attempt.finished',"
                       " 'verify.finished', 'merge.finished', 'check.started', 'check.finished')")
    return int(rows[0][0]) if rows else 0


def _checking(repo: Path) -> bool:
    """Whether the killed session had a candidate in its check (a `check.started` with no `check.finished`)."""
    rows = query(repo, "SELECT type FROM events WHERE type IN ('check.started', 'check.finished') ORDER BY id")
    return bool(rows) and rows[-1][0] == "check.started"


def _recorded(repo: Path) -> bool:
    return bool(query(repo, "SELECT id FROM runs"))  # nothing yet if killed before the schema was written


def _completed(repo: Path) -> bool:
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        return bool(db.execute("SELECT status FROM runs").fetchone()[0] == "completed")
