"""Faulty and hostile agents: orchard takes a task's result only from its own branch, only if it descends from the
attempt's start, restores the integration ref if an agent moved it, reaps what agents leave behind, and the user's
checkout stays unchanged."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import orchard
from orchard.testing import snapshot_repository
from tests.conftest import git, run_orchard
from tests.test_engine_acceptance import checkout_state, plan_text, task


def statuses(repo: Path) -> dict[str, dict[str, object]]:
    return {t["id"]: t for t in run_orchard("status", "--json", cwd=repo).json()["tasks"]}


def notes(repo: Path) -> list[str]:
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        return [json.loads(r[0])["text"] for r in db.execute("SELECT data FROM events WHERE type = 'run.note'")]


def test_hostile_git_moves_are_contained(repo: Path, write_plan: Callable[[str], Path]) -> None:
    (repo / "mine.txt").write_text("the user's own uncommitted work\n")
    before = checkout_state(repo)
    tasks = (
        task("first", "@write first.txt 1")
        # deletes the integration branch, then does honest work
        + task("vandal", "@git update-ref -d refs/heads/orchard/{run}/integration\n@write vandal.txt v",
               "    depends_on: [first]\n")
        + task("after", "@write after.txt a", "    depends_on: [vandal]\n")
        # switches its worktree to another branch and works there: its result cannot be taken
        + task("switcher", "@git checkout -q -b elsewhere\n@write switched.txt s")
        # commits on a side branch, then comes back: only its task branch counts
        + task("sider", "@git checkout -q -b side-{task}\n@write side.txt s\n@git add side.txt\n"
                        "@git commit -q -m side\n@git checkout -q orchard/{run}/task/{task}\n@write main.txt m")
        # rewrites history below its start: rejected
        + task("rewriter", "@git reset -q --hard HEAD~1\n@write rewritten.txt r", "    depends_on: [first]\n")
        # deletes its own worktree: nothing to take
        + task("suicide", "@write lost.txt l\n@rmself")
    )
    # unconfined, so that orchard's own defences are what is tested (in bwrap most of these git moves fail outright)
    result = orchard.run(write_plan("sandbox: none\n" + plan_text(tasks)), repo=repo)
    rows = statuses(repo)
    assert {k: v["status"] for k, v in rows.items()} == {
        "first": "merged", "vandal": "merged", "after": "merged", "switcher": "failed", "sider": "merged",
        "rewriter": "failed", "suicide": "failed"}
    assert "left the worktree on refs/heads/elsewhere" in str(rows["switcher"]["error"])
    assert "no longer descends" in str(rows["rewriter"]["error"])
    assert "no changes" in str(rows["suicide"]["error"])
    files = set(git(repo, "ls-tree", "-r", "--name-only", f"orchard/{result.run_id}/integration").split())
    assert {"first.txt", "vandal.txt", "after.txt", "main.txt"} <= files
    assert not {"switched.txt", "side.txt", "rewritten.txt", "lost.txt"} & files
    assert any("restored" in n for n in notes(repo))
    assert checkout_state(repo) == before and git(repo, "branch", "--show-current").strip() == "main"


def test_crashes_floods_and_daemons(repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    tasks = (
        task("segv", "@segv")
        + task("flood", "@spew 100\n@write flood.txt f")
        + task("daemon", "@daemon 120\n@write daemon.txt d")
    )
    # unconfined: orchard reaps in-group daemons itself (in bwrap the PID namespace ends them: test_sandbox)
    result = orchard.run(write_plan("sandbox: none\n" + plan_text(tasks)), repo=repo)
    rows = statuses(repo)
    assert rows["segv"]["status"] == "failed" and str(rows["segv"]["error"]).startswith("crashed")
    assert rows["flood"]["status"] == "merged" and rows["daemon"]["status"] == "merged"
    log = repo / ".orchard" / "runs" / result.run_id / "logs" / "flood.1.log"
    assert 50 * 2**20 <= log.stat().st_size < 51 * 2**20  # 100 MB printed; the log stops at its 50 MiB cap
    with log.open("rb") as fh:
        fh.seek(-200, 2)
        assert b"log capped" in fh.read()
    pid_file = repo / ".orchard" / "worktrees" / result.run_id / "daemon.daemon"
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid), "the daemon the agent left behind survived its process group"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (ProcessLookupError, OSError):
        return False


def _lines(changed: dict[int, str]) -> str:
    """shared.txt's ten lines with some replaced, as the fake agent's `@write` TEXT (`\\n` for newlines)."""
    return "\\n".join(changed.get(i, f"line {i}") for i in range(10)) + "\\n"


def test_planted_hooks_config_and_attributes_never_run_and_the_users_repository_is_untouched(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    """An agent plants every hook, every config key that runs a program, attributes naming them, an exclude of
    everything, grafts, a shallow boundary and a bogus alternate where its git looks; another moves branches, drops
    a stash, expires reflogs and prunes. orchard runs none of it, loses no edit, and the user's repository (config,
    hooks, info, refs, stash, reflogs) is byte for byte as before."""
    marks, planted = tmp_path / "marks", tmp_path / "planted"
    (repo / "shared.txt").write_text(_lines({}).replace("\\n", "\n"))
    git(repo, "add", "shared.txt")
    git(repo, "commit", "-q", "-m", "shared")
    (repo / "shared.txt").write_text("the user's stashed edit\n")
    git(repo, "stash", "-q")
    # hooks in the user's own repository (theirs, or planted there earlier): orchard's publishing and ref updates there
    # must not run them either (the trial saw reference-transaction fire 35 times)
    user_marks = tmp_path / "user-marks"
    user_marks.mkdir()
    for hook in ("reference-transaction", "post-checkout", "post-merge", "post-commit", "pre-commit", "post-rewrite",
                 "pre-auto-gc", "post-index-change"):
        script = repo / ".git" / "hooks" / hook
        script.write_text(f'#!/bin/sh\ntouch "{user_marks}/{hook}"\ncat >/dev/null 2>&1\nexit 0\n')
        script.chmod(0o755)
    before, checkout = snapshot_repository(repo / ".git"), checkout_state(repo)
    tasks = (
        task("vandal", "@git update-ref refs/heads/main HEAD~1\n@write junk.txt j\n@git add junk.txt\n@git stash -q\n"
                       "@git stash drop -q\n@git reflog expire --expire=now --all\n@git gc -q --prune=now\n"
                       "@git branch -f main HEAD\n@write vandal.txt v")
        # plants once the vandal's own git calls are over (they would run what was planted: the agent's own
        # processes, not orchard's) and its result merged, and runs no git itself afterwards. Without a sandbox an
        # agent planting while orchard runs git can race orchard's restore (docs/reliability.md); bwrap closes that
        + task("planter", f"@plant-git {marks}\n@write planter.txt p\n@touch {planted}", "    depends_on: [vandal]\n")
        # two edits of one file, merged after the planting: a merge driver or a clean filter would lose one
        + task("top", f"@wait-for {planted}\n@write shared.txt {_lines({0: 'top edit'})}")
        + task("bottom", f"@wait-for {planted}\n@write shared.txt {_lines({9: 'bottom edit'})}")
        # starts from the planter's result (its `.gitattributes` names the filter) in orchard's restored repository
        + task("after", "@write after.txt a", "    depends_on: [planter]\n")
    )
    # unconfined: in bwrap orchard's config, hooks and info are read-only to agents (test_sandbox); here orchard's
    # restoring them is what is tested
    result = orchard.run(write_plan("sandbox: none\n" + plan_text(tasks)), repo=repo)
    assert {k: v["status"] for k, v in statuses(repo).items()} == dict.fromkeys(
        ("vandal", "planter", "top", "bottom", "after"), "merged")
    integration = f"orchard/{result.run_id}/integration"
    shared = git(repo, "show", f"{integration}:shared.txt").splitlines()
    assert shared[0] == "top edit" and shared[9] == "bottom edit" and shared[1:9] == [f"line {i}" for i in range(1, 9)]
    assert git(repo, "show", f"{integration}:after.txt") == "a"  # checked out and committed with no filter
    ran = sorted(p.name for p in marks.iterdir() if p.is_file()) if marks.is_dir() else []
    assert ran == [], f"planted programs ran: {ran}"
    assert sorted(p.name for p in user_marks.iterdir()) == [], "the user's hooks ran for orchard"
    assert snapshot_repository(repo / ".git") == before
    assert checkout_state(repo) == checkout
    assert git(repo, "stash", "show", "-p", "stash@{0}").count("the user's stashed edit") == 1
    repaired = [n for n in notes(repo) if "changed orchard's git directory" in n]
    # restores happen as the planting goes on (before each merge, commit and attempt): each names the planter among
    # the agents that were running, and together they name everything planted (gc's `info/refs` is no harm)
    assert repaired and all("planter" in n for n in repaired), repaired
    joined = " ".join(repaired)
    assert all(word in joined for word in ("config", "objects/info/alternates", "shallow", "hooks/post-commit",
                                           "info/grafts", "info/attributes", "info/exclude")), repaired
    # the user's own git afterwards runs nothing an agent planted (their own hooks, yes)
    git(repo, "status", "--short")
    git(repo, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "--allow-empty", "-m", "user's own")
    assert (user_marks / "post-commit").exists()  # the hooks above are live: only orchard skipped them
    assert not marks.is_dir() or not any(p.is_file() for p in marks.iterdir())


def test_a_hanging_verify_is_a_timeout_of_the_attempt_not_an_exit_code(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    """The task's `timeout` bounds the agent and its verify together: an agent that used most of it leaves its
    verify the rest, and a verify that hangs ends `timeout` (the trial saw "verify failed (exit None)")."""
    hang = f'["{sys.executable}", "-c", "import time; time.sleep(120)"]'
    tasks = task("slowpoke", "@sleep 1.5\n@write s.txt s", f"    timeout: 3s\n    verify: {hang}\n")
    started = time.monotonic()
    orchard.run(write_plan(plan_text(tasks)), repo=repo)
    took = time.monotonic() - started
    row = statuses(repo)["slowpoke"]
    assert row["status"] == "failed" and "verify timed out" in str(row["error"]), row
    assert took < 3 + 5 + 10, took  # the timeout and the grace period, not the verify's two minutes
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        (outcome, duration), = db.execute("SELECT outcome, finished_at - started_at FROM attempts").fetchall()
    assert outcome == "timeout" and duration < 3 + 5 + 2, duration  # agent and verify within one timeout


def test_a_publish_that_fails_leaves_the_run_recorded_and_land_publishes_again(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's copy of the integration branch is a copy: when updating it fails (here every `git fetch` into the
    user's repository does), the run still ends as it should, says so, and `orchard land` publishes orchard's
    record before landing."""
    shim = tmp_path / "bin" / "git"
    shim.parent.mkdir()
    real = shutil.which("git")
    shim.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = fetch ] && {{ echo "fetch refused" >&2; exit 1; }}; done\n'
                    f'exec "{real}" "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    result = orchard.run(write_plan(plan_text(task("t", "@write t.txt t"))), repo=repo)
    assert result.status == "completed"
    assert any("could not bring the run's branches in your repository up to date" in n for n in notes(repo))
    integration = f"orchard/{result.run_id}/integration"
    assert "t.txt" not in git(repo, "ls-tree", "--name-only", integration)  # the user's copy is still the base
    monkeypatch.undo()
    landed = run_orchard("land", cwd=repo)
    assert landed.code == 0, landed.out + landed.err
    assert "t.txt" in git(repo, "ls-tree", "--name-only", "main")


REWRITE_PLAN = """import json, os, pathlib, sqlite3, sys
db = pathlib.Path(os.environ["ORCHARD_ROOT"]) / ".orchard" / "state.db"
try:
    with sqlite3.connect(db) as conn:
        [(snapshot,)] = conn.execute("SELECT plan_json FROM runs")
        plan = json.loads(snapshot)
        injected = [sys.executable, "-c", "import sys; open(sys.argv[1], 'w')", sys.argv[1]]
        plan["agents"]["fake"]["options"]["command"] = injected
        conn.execute("UPDATE runs SET plan_json = ?", (json.dumps(plan),))
    print("rewrote the plan")
except sqlite3.Error as exc:
    print(f"could not rewrite the plan: {exc}")
sys.exit(1)
"""


@pytest.mark.parametrize("sandbox", ["none", "bwrap"])
def test_a_plan_an_agent_rewrote_in_the_journal_is_never_run(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path, sandbox: str) -> None:
    """The trial's agent rewrote the recorded plan and `resume` ran the command it injected. In the sandbox it
    cannot write the journal; outside it, the snapshot's hash no longer matches and orchard refuses the run."""
    script, mark = tmp_path / "rewrite_plan.py", tmp_path / "injected-command-ran"
    script.write_text(REWRITE_PLAN)
    agents = (f'  hostile: {{type: command, command: ["{sys.executable}", "{script}", "{mark}"]}}\n'
              f'  fake: {{type: command, command: ["{sys.executable}", "-c", "pass"]}}\n')
    tasks = (task("evil", "rewrite the plan", "    agent: hostile\n")
             + task("later", "honest work", "    depends_on: [evil]\n"))
    plan = write_plan(f"sandbox: {sandbox}\n" + plan_text(tasks, agents=agents))
    first = run_orchard("run", str(plan), cwd=repo)
    assert first.code == 1
    log = next((repo / ".orchard" / "runs").glob("*/logs/evil.1.log")).read_text()
    retried = run_orchard("retry", "evil", cwd=repo)
    if sandbox == "none":
        assert "rewrote the plan" in log
        assert retried.code == 3, retried.out + retried.err
        assert "was changed after the run started" in retried.err and "Traceback" not in retried.err
    else:
        assert "could not rewrite the plan" in log  # the journal is outside the sandbox's writable set
        assert retried.code == 1  # the hostile agent fails again, and `later` stays blocked
    assert not mark.exists()


def test_an_unconfined_agents_escaped_daemon_is_adopted_and_killed(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    """Without a sandbox's PID namespace: a daemon forked twice, in its own session, its environment emptied and
    working in `/` is re-parented to orchard (a child subreaper), which kills it when the session ends."""
    tasks = task("escaper", "@daemon-escape 120\n@write e.txt e") + task("other", "@write o.txt o")
    result = orchard.run(write_plan("sandbox: none\n" + plan_text(tasks)), repo=repo)
    assert result.status.value == "completed"
    pid = int((repo / ".orchard" / "worktrees" / result.run_id / "escaper.daemon").read_text())
    assert not _alive(pid), "the escaped daemon outlived the run"
    assert not [p for p in _children() if _alive(p)], "orchard left an adopted process behind"


def _children() -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process().children()]


def test_an_unconfined_agent_that_plants_in_the_users_git_directory_is_caught_and_undone(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    """`sandbox: none` cannot stop writes to the user's repository, but the control files of its git directory are
    put back after every unconfined attempt, and the one attempt that was running fails as `tampered`."""
    config = (repo / ".git" / "config").read_bytes()
    hooks = sorted(os.listdir(repo / ".git" / "hooks"))
    mark = tmp_path / "hook-ran"
    user_git = "../../../.git"  # from .orchard/pool/<id>
    tasks = task("planter", f"@write {user_git}/hooks/post-commit #!/bin/sh\\ntouch {mark}\n"
                            f"@append {user_git}/config [core]\\n\\thooksPath = /tmp/evil\n"
                            "@write ../../../stray.txt left in the user's checkout\n@write p.txt p",
                 "    retries: 2\n")
    result = orchard.run(write_plan("sandbox: none\n" + plan_text(tasks, parallel=1)), repo=repo)
    assert (repo / ".git" / "config").read_bytes() == config
    assert sorted(os.listdir(repo / ".git" / "hooks")) == hooks
    git(repo, "commit", "-q", "--allow-empty", "-m", "the user commits afterwards")
    assert not mark.exists()
    rows = statuses(repo)
    assert rows["planter"]["status"] == "failed" and rows["planter"]["attempts"] == 1  # tampered: never retried
    assert str(rows["planter"]["error"]).startswith("tampered")
    said = notes(repo)
    assert any("hooks/post-commit" in n and "config" in n and "put back" in n for n in said), said
    assert any("your checkout changed" in n and "stray.txt" in n for n in said), said
    assert result.status.value == "failed"
