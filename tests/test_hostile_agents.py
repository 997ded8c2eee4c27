"""Faulty and hostile agents: orchard takes a task's result only from its own branch, only if it descends from the
attempt's start, restores the integration ref if an agent moved it, reaps what agents leave behind, and the user's
checkout stays unchanged."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import orchard
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
    result = orchard.run(write_plan(plan_text(tasks)), repo=repo)
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
    result = orchard.run(write_plan(plan_text(tasks)), repo=repo)
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
