"""The issue's acceptance scenarios: real git, real child processes, the real engine end to end."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orchard
from orchard.core.events import OrchardEvent
from orchard.vcs import find_repo, list_worktrees
from tests.conftest import PYTHON, Result, agent_block, git, query, run_orchard, snapshot_checkout


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
    tasks = "".join(task(f"t{i}", f"@sleep 1\n@write out/t{i}.txt made by t{i}") for i in range(4))
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


def test_never_more_than_parallel_running(repo: Path, write_plan: Callable[[str], Path]) -> None:
    tasks = "".join(task(f"t{i}", f"@sleep 0.3\n@write f{i}.txt {i}") for i in range(10))
    result = orchard.run(write_plan(plan_text(tasks, parallel=5)), repo=repo)
    assert result.summary["merged"] == 10
    running: set[str] = set()
    peak = 0
    for event in journal(repo):
        if event["type"] == "task.status":
            if event["status"] in ("running", "verifying"):
                running.add(str(event["task"]))
            else:
                running.discard(str(event["task"]))
            peak = max(peak, len(running))
    assert peak == 5


def test_chain_each_agent_reads_what_the_previous_wrote(repo: Path, write_plan: Callable[[str], Path]) -> None:
    tasks = (
        task("design", "@write design.md the design")
        + task("implement", "@derive design.md impl.md implemented:", "    depends_on: [design]\n")
        + task("test", "@derive impl.md test.md tested:", "    depends_on: [implement]\n")
    )
    result = orchard.run(write_plan(plan_text(tasks)), repo=repo)
    assert result.exit_code == 0
    content = git(repo, "show", f"orchard/{result.run_id}/integration:test.md")
    assert content == "tested:implemented:the design"


def test_failure_blocks_dependents_only(repo: Path, write_plan: Callable[[str], Path]) -> None:
    tasks = (
        task("broken", "@print trying\n@exit 4")
        + task("child", "@write child.txt x", "    depends_on: [broken]\n")
        + task("grandchild", "@write gc.txt x", "    depends_on: [child]\n")
        + task("free", "@write free.txt x")
    )
    result = run_orchard("run", str(write_plan(plan_text(tasks))), "--json", cwd=repo)
    assert result.code == 1, result.err
    status = {t["id"]: t for t in run_orchard("status", "--json", cwd=repo).json()["tasks"]}
    assert status["broken"]["status"] == "failed" and "exit" in status["broken"]["error"]
    assert status["child"]["status"] == "blocked" and status["grandchild"]["status"] == "blocked"
    assert status["free"]["status"] == "merged"
    assert "broken" in status["child"]["error"]


def _conflict_plan(retries: int) -> str:
    return plan_text(
        task("first", "@write shared.txt from first")
        + task("second", "@sleep 1\n@unless-feedback @write shared.txt from second\n"
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
