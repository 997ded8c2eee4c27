"""The acceptance scenarios: real git, real child processes, the real engine end to end.

The engine's own rules (parallel limits, dependency order, failures blocking dependents, backpressure from the merge
queue) run against both journals: the SQLite one of real runs and the in-memory one of `orchard.testing`, read back
through the same `Records` interface.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import orchard
from orchard.core.events import OrchardEvent
from orchard.core.journal import Records
from orchard.core.model import RunStatus, TaskStatus
from orchard.core.records import TaskRecord
from orchard.runtime.session import RunResult
from orchard.store import Store
from orchard.testing import MemoryStore, snapshot_checkout
from orchard.vcs import find_repo, list_worktrees
from tests.conftest import PYTHON, Result, agent_block, git, query, run_orchard


def plan_text(tasks: str, parallel: int = 4, agents: str | None = None) -> str:
    head = f"parallel: {parallel}\ndefaults: {{agent: fake, retries: 0}}\n"
    return f"{head}agents:\n{agents or agent_block()}tasks:\n{tasks}"


def task(task_id: str, prompt: str, extra: str = "") -> str:
    lines = "\n".join("      " + line for line in prompt.strip().splitlines())
    return f"  - id: {task_id}\n{extra}    prompt: |\n{lines}\n"


def journal(repo: Path) -> list[dict[str, object]]:
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        return [json.loads(row[0]) for row in db.execute("SELECT data FROM events ORDER BY id")]


def intervals(repo: Path) -> dict[str, tuple[float, float]]:
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        rows = db.execute("SELECT task_id, started_at, finished_at FROM attempts").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def checkout_state(repo: Path) -> dict[str, str | None]:
    """The user's checkout (HEAD, index bytes, status incl. ignored files, stash) minus orchard's own directory."""
    snap = snapshot_checkout(repo)
    status = snap["status"] or ""
    snap["status"] = "\0".join(e for e in status.split("\0") if not e.startswith("!! .orchard/"))
    return snap


def integration_files(repo: Path, run_id: str) -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", f"orchard/{run_id}/integration").split())


def test_four_parallel_tasks_overlap_in_own_worktrees_and_leave_checkout_untouched(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    (repo / "notes.txt").write_text("uncommitted user work\n")  # untracked file in the user's checkout
    before = checkout_state(repo)
    readme = (repo / "README.md").read_bytes()
    tasks = "".join(task(f"t{i}", f"@barrier four 4\n@write out/t{i}.txt made by t{i}") for i in range(4))
    seen: list[OrchardEvent] = []
    result = orchard.run(write_plan(plan_text(tasks)), repo=repo, on_event=seen.append)
    assert result.status == "completed" and result.exit_code == 0
    spans = intervals(repo)
    latest_start = max(s for s, _ in spans.values())
    earliest_end = min(e for _, e in spans.values())
    assert latest_start < earliest_end, f"the four attempts did not all overlap: {spans}"
    worktrees = {e.worktree for e in seen if e.type == "attempt.started"}  # type: ignore[attr-defined]
    assert len(worktrees) == 4
    assert integration_files(repo, result.run_id) >= {f"out/t{i}.txt" for i in range(4)}
    assert not any(".orchard/worktrees" in str(w.path) for w in list_worktrees(find_repo(repo)))
    assert not list((repo / ".orchard" / "worktrees" / result.run_id).iterdir())
    assert checkout_state(repo) == before
    assert (repo / "README.md").read_bytes() == readme and not (repo / "out").exists()
    assert git(repo, "branch", "--show-current").strip() == "main"


@dataclass
class Ran:
    """A finished run and the records its journal kept, read back through `Records` whichever journal it was."""

    result: RunResult
    records: Records

    def events(self) -> list[dict[str, Any]]:
        return [data for _, data in self.records.events(self.result.run_id)]

    def tasks(self) -> dict[str, TaskRecord]:
        return {t.task_id: t for t in self.records.tasks(self.result.run_id)}


@pytest.fixture(params=["sqlite", "memory"])
def run_plan(request: pytest.FixtureRequest, repo: Path, write_plan: Callable[[str], Path]) -> Iterator[
        Callable[[str], Ran]]:
    """`run_plan(yaml)` runs a plan in-process on the test repository with the SQLite or the in-memory journal."""
    opened: list[Store] = []

    def run(text: str) -> Ran:
        memory = MemoryStore() if request.param == "memory" else None
        result = orchard.run(write_plan(text), repo=repo, records=memory)
        if memory is not None:
            assert not (repo / ".orchard" / "state.db").exists(), "the engine wrote state around its journal"
            return Ran(result, memory)
        opened.append(Store(repo / ".orchard" / "state.db"))
        return Ran(result, opened[-1])

    yield run
    for store in opened:
        store.close()


def peak_running(events: list[dict[str, Any]]) -> int:
    """The most tasks running or verifying at once, replayed from the journal's status changes."""
    running: set[str] = set()
    peak = 0
    for event in events:
        if event["type"] == "task.status":
            if event["status"] in (TaskStatus.RUNNING, TaskStatus.VERIFYING):
                running.add(str(event["task"]))
            else:
                running.discard(str(event["task"]))
            peak = max(peak, len(running))
    return peak


def test_never_more_than_parallel_running(run_plan: Callable[[str], Ran]) -> None:
    tasks = "".join(task(f"t{i}", f"@sleep 0.3\n@write f{i}.txt {i}") for i in range(10))
    ran = run_plan(plan_text(tasks, parallel=5))
    assert ran.result.summary["merged"] == 10
    assert peak_running(ran.events()) == 5  # never more, and the limit is used


def test_chain_each_agent_reads_what_the_previous_wrote(repo: Path, run_plan: Callable[[str], Ran]) -> None:
    tasks = (
        task("design", "@write design.md the design")
        + task("implement", "@derive design.md impl.md implemented:", "    depends_on: [design]\n")
        + task("test", "@derive impl.md test.md tested:", "    depends_on: [implement]\n")
    )
    ran = run_plan(plan_text(tasks))
    assert ran.result.exit_code == 0
    content = git(repo, "show", f"orchard/{ran.result.run_id}/integration:test.md")
    assert content == "tested:implemented:the design"
    order = [(e["type"], e["task"]) for e in ran.events()
             if e["type"] == "attempt.started" or (e["type"] == "task.status" and e["status"] == "merged")]
    assert order == [("attempt.started", "design"), ("task.status", "design"), ("attempt.started", "implement"),
                     ("task.status", "implement"), ("attempt.started", "test"), ("task.status", "test")]


def test_failure_blocks_dependents_only(run_plan: Callable[[str], Ran]) -> None:
    tasks = (
        task("broken", "@print trying\n@exit 4")
        + task("child", "@write child.txt x", "    depends_on: [broken]\n")
        + task("grandchild", "@write gc.txt x", "    depends_on: [child]\n")
        + task("free", "@write free.txt x")
    )
    ran = run_plan(plan_text(tasks))
    assert (ran.result.status, ran.result.exit_code) == (RunStatus.FAILED, 1)
    status = ran.tasks()
    assert status["broken"].status is TaskStatus.FAILED and "exit" in status["broken"].error
    assert status["child"].status is TaskStatus.BLOCKED and status["grandchild"].status is TaskStatus.BLOCKED
    assert status["free"].status is TaskStatus.MERGED
    assert "broken" in status["child"].error
    assert (ran.result.summary["failed"], ran.result.summary["blocked"]) == (1, 2)
    assert not [e for e in ran.events() if e["type"] == "attempt.started" and e["task"] in ("child", "grandchild")]


def slow_merges(directory: Path, seconds: float, started: Path | None = None) -> str:
    """A PATH whose `git` is the real one, except that `git merge-tree` first waits `seconds` (a fake of the external
    tool: it makes the merge queue the bottleneck, deterministically), after creating `started` if given."""
    real = shutil.which("git")
    assert real, "git is needed"
    shim = directory / "git"
    mark = f'touch "{started}"; ' if started else ""
    shim.write_text("#!/bin/sh\n"
                    f'for a in "$@"; do [ "$a" = merge-tree ] && {{ {mark}sleep {seconds}; break; }}; done\n'
                    f'exec "{real}" "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return f"{directory}{os.pathsep}{os.environ['PATH']}"


def test_backpressure_no_new_attempt_while_parallel_results_wait_to_merge(
        run_plan: Callable[[str], Ran], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", slow_merges(tmp_path, 0.4))
    ran = run_plan(plan_text("".join(task(f"t{i}", f"@write f{i}.txt {i}") for i in range(8)), parallel=2))
    assert ran.result.summary["merged"] == 8
    merging: set[str] = set()
    at_start = []
    for event in ran.events():
        if event["type"] != "task.status":
            continue
        if event["status"] == "running":
            at_start.append(len(merging))
        merging.discard(str(event["task"]))
        if event["status"] == "merging":
            merging.add(str(event["task"]))
    # one result in the merge queue plus at most `parallel - 1` waiting: with `parallel` waiting, nothing starts
    assert max(at_start) <= 2, at_start
    assert max(at_start) == 2  # the limit is reached: merges really were the bottleneck


def _conflict_plan(retries: int) -> str:
    return plan_text(
        task("first", "@write shared.txt from first")
        # `second` ends after `first` did (whose worktree is parked then: its task link is gone), so it merges
        # second and conflicts
        + task("second", "@if-attempt 1 @wait-gone ../../worktrees/*/first\n"
                         "@unless-feedback @write shared.txt from second\n"
                         "@if-feedback @write shared.txt from first\\nand second",
               f"    retries: {retries}\n"),
    )


def test_conflict_is_retried_on_the_new_tip_with_the_paths_in_the_prompt(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    (repo / "shared.txt").write_text("base\n")
    git(repo, "add", "shared.txt")
    git(repo, "commit", "-q", "-m", "shared")
    result = orchard.run(write_plan(_conflict_plan(retries=1)), repo=repo)
    assert result.exit_code == 0, result.summary
    prompt = (repo / ".orchard" / "runs" / result.run_id / "prompts" / "second.2.md").read_text()
    assert "conflicted" in prompt and "- shared.txt" in prompt
    assert git(repo, "show", f"orchard/{result.run_id}/integration:shared.txt") == "from first\nand second"
    merges = [e for e in journal(repo) if e["type"] == "merge.finished" and e["task"] == "second"]
    assert [m["result"] for m in merges] == ["conflict", "merged"]


def test_conflict_without_retries_ends_conflict(repo: Path, write_plan: Callable[[str], Path]) -> None:
    (repo / "shared.txt").write_text("base\n")
    git(repo, "add", "shared.txt")
    git(repo, "commit", "-q", "-m", "shared")
    result = run_orchard("run", str(write_plan(_conflict_plan(retries=0))), cwd=repo)
    assert result.code == 1
    second = next(t for t in run_orchard("status", "--json", cwd=repo).json()["tasks"] if t["id"] == "second")
    assert second["status"] == "conflict" and "shared.txt" in second["error"]


def test_verify_failure_feeds_output_back_and_retry_fixes_it(repo: Path, write_plan: Callable[[str], Path]) -> None:
    code = "import pathlib,sys; t=pathlib.Path('v.txt').read_text(); print('got', t); sys.exit(t.strip() != 'good')"
    check = f'verify: ["{PYTHON}", "-c", "{code}"]'
    tasks = task("v", "@unless-feedback @write v.txt bad\n@if-feedback @write v.txt good",
                 f"    retries: 1\n    {check}\n")
    result = orchard.run(write_plan(plan_text(tasks)), repo=repo)
    assert result.exit_code == 0
    prompt2 = (repo / ".orchard" / "runs" / result.run_id / "prompts" / "v.2.md").read_text()
    assert "did not pass the verify command" in prompt2 and "got bad" in prompt2
    events = [e for e in journal(repo) if e["type"] == "verify.finished"]
    assert [e["passed"] for e in events] == [False, True]


def test_no_changes_fails_unless_allowed(repo: Path, write_plan: Callable[[str], Path]) -> None:
    tasks = task("idle", "@print nothing to do") + task("ok-idle", "@print nothing", "    allow_empty: true\n")
    result = orchard.run(write_plan(plan_text(tasks)), repo=repo)
    doc = json.loads(run_orchard("status", "--json", cwd=repo).out)
    status = {t["id"]: t for t in doc["tasks"]}
    assert status["idle"]["status"] == "failed" and "no changes" in status["idle"]["error"]
    assert status["ok-idle"]["status"] == "merged"
    assert result.exit_code == 1


def test_sigkill_then_resume_never_reruns_merged_tasks(repo: Path, write_plan: Callable[[str], Path]) -> None:
    tasks = "".join(task(f"t{i}", f"@sleep {0.4 + 0.3 * (i % 3)}\n@write k{i}.txt {i}") for i in range(8))
    tasks += task("last", "@write last.txt done", "    depends_on: [t0, t7]\n")
    plan = write_plan(plan_text(tasks, parallel=2))
    proc = subprocess.Popen([PYTHON, "-m", "orchard", "run", str(plan), "--json"], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        if len(query(repo, "SELECT task_id FROM tasks WHERE status = 'merged'")) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed: Result = run_orchard("resume", "--json", cwd=repo)
    assert resumed.code == 0, resumed.err
    events = journal(repo)
    merged_at: dict[str, int] = {}
    for i, e in enumerate(events):
        if e["type"] == "task.status" and e["status"] == "merged":
            assert e["task"] not in merged_at, f"{e['task']} merged twice"
            merged_at[str(e["task"])] = i
        if e["type"] == "attempt.started" and e["task"] in merged_at:
            raise AssertionError(f"{e['task']} started again after it merged")
    assert len(merged_at) == 9
    run_id = json.loads(run_orchard("status", "--json", cwd=repo).out)["run"]["id"]
    assert integration_files(repo, run_id) >= {f"k{i}.txt" for i in range(8)} | {"last.txt"}
