"""The commands that change things after (or during) a run: retry, cancel, the repository lock, clean, land."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import PYTHON, Result, git, own_git, query, run_orchard
from tests.test_cli import assert_clean_exit, plan_text, run_id_of, task


def statuses(orchard: Callable[..., Result], *args: str) -> dict[str, str]:
    result = orchard("status", "--json", *args)
    assert_clean_exit(result, 0)
    return {t["id"]: t["status"] for t in result.json()["tasks"]}


def run_status(orchard: Callable[..., Result], *args: str) -> str:
    result = orchard("status", "--json", *args)
    assert_clean_exit(result, 0)
    return str(result.json()["run"]["status"])


def branches(repo: Path) -> set[str]:
    """orchard's branches in the repository."""
    return set(git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/orchard/").split())


def worktree_paths(repo: Path) -> set[Path]:
    """The worktrees registered in orchard's repository (the user's has only its own checkout)."""
    return {Path(line.split(" ", 1)[1]).resolve()
            for line in git(own_git(repo), "worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")}


# ---- retry ------------------------------------------------------------------------------------------------------


def test_retry_reruns_a_failed_task_and_its_blocked_dependents(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    tasks = (task("a", "@print attempt output\n@if-attempt 1 @exit 1\n@if-attempt 2 @write a.txt fixed")
             + task("b", "@write b.txt needs a", extra="    depends_on: [a]\n"))
    first = orchard("run", "--json", str(write_plan(plan_text(tasks))))
    assert_clean_exit(first, 1)
    run_id = first.ndjson()[0]["run_id"]
    assert statuses(orchard) == {"a": "failed", "b": "blocked"}
    unknown = orchard("retry", "nope")
    assert_clean_exit(unknown, 2)
    assert "nope" in unknown.err
    time.sleep(1)  # the user takes a moment before retrying

    retry = orchard("retry", "--json", "a")
    assert_clean_exit(retry, 0)
    events = retry.ndjson()
    assert events[0]["type"] == "run.started" and events[0]["resumed"] is True
    assert events[0]["run_id"] == run_id  # the same run goes on
    assert statuses(orchard) == {"a": "merged", "b": "merged"}

    # wall time counts both sessions, not the pause between them
    def span(evs: list[dict[str, Any]]) -> float:
        return (datetime.fromisoformat(evs[-1]["ts"]) - datetime.fromisoformat(evs[0]["ts"])).total_seconds()

    summary = events[-1]["summary"]
    assert summary["wall_s"] == pytest.approx(span(first.ndjson()) + span(events), abs=0.05)
    assert summary["attempts"] == 3 and summary["merged"] == 2
    assert run_status(orchard) == "completed"
    assert set(git(repo, "ls-tree", "-r", "--name-only", f"orchard/{run_id}/integration").split()) >= {
        "a.txt", "b.txt"}

    logs = orchard("logs", "a")
    assert_clean_exit(logs, 0)
    assert "── attempt 1" in logs.out and "── attempt 2" in logs.out
    only_second = orchard("logs", "a", "--attempt", "2")
    assert_clean_exit(only_second, 0)
    assert "── attempt 2" in only_second.out and "── attempt 1" not in only_second.out


# ---- live runs: the lock, cancel --------------------------------------------------------------------------------


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in the process group."""
    for proc in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False


@pytest.fixture
def leftover_groups() -> Iterator[list[int]]:
    """Agent process groups a test started; whatever survives the test is killed afterwards."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def live_run(repo: Path, plan: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    """`orchard run` in the background until its task `s` is running; yields (process, run id, agent pgid)."""
    earlier = {row[0] for row in query(repo, "SELECT id FROM runs")}
    proc = subprocess.Popen([PYTHON, "-m", "orchard", "run", *args, str(plan)], cwd=repo, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pgid = 0
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"run ended early: {proc.communicate()}"
            assert time.monotonic() < deadline, "task s never started"
            rows = [r for r in query(repo, "SELECT run_id, pgid FROM attempts WHERE task_id = 's' AND pgid > 0")
                    if r[0] not in earlier]
            if rows:
                run_id, pgid = rows[0][0], int(rows[0][1])
                result = run_orchard("status", "--json", run_id, cwd=repo)
                if result.code == 0 and {t["id"]: t["status"] for t in result.json()["tasks"]}["s"] == "running":
                    yield proc, run_id, pgid
                    return
            time.sleep(0.2)
    finally:
        if proc.poll() is None:  # the test failed half-way: leave no processes behind
            proc.kill()
            if pgid:
                with contextlib.suppress(OSError):
                    os.killpg(pgid, signal.SIGKILL)
        proc.communicate(timeout=10)


SLEEPER = plan_text(task("s", "@sleep 30") + task("w", "@write w.txt w", extra="    depends_on: [s]\n"))


def test_live_run_locks_the_repository_and_cancel_stops_it(
        orchard: Callable[..., Result], write_plan: Callable[..., Path], repo: Path,
        leftover_groups: list[int]) -> None:
    plan = write_plan(SLEEPER)
    other = write_plan(plan_text(task("x", "@write x.txt x")), name="other.yaml")
    with live_run(repo, plan) as (proc, run_id, pgid):
        leftover_groups.append(pgid)
        assert group_alive(pgid)

        second = orchard("run", str(other))
        assert_clean_exit(second, 3)
        assert f"pid {proc.pid}" in second.err and run_id in second.err

        land = orchard("land")
        assert_clean_exit(land, 2)
        assert "live" in land.err

        clean = orchard("clean")
        assert_clean_exit(clean, 0)
        assert f"skipping live run {run_id}" in clean.out
        assert (repo / ".orchard" / "worktrees" / run_id / "s").is_dir()

        started = time.monotonic()
        cancel = orchard("cancel")
        assert_clean_exit(cancel, 0)
        assert run_id in cancel.out
        proc.wait(timeout=15)
        assert time.monotonic() - started < 10, "the run took too long to stop"
        _out, err = proc.communicate()
        assert "Traceback" not in err
        deadline = time.monotonic() + 5
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_alive(pgid), "the sleeping agent's process group survived the cancel"
        assert statuses(orchard) == {"s": "cancelled", "w": "cancelled"}

    after = orchard("run", str(other))  # the lock went with the process
    assert_clean_exit(after, 0)


def test_cancelled_live_run_ends_cancelled_with_exit_130(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    with live_run(repo, write_plan(SLEEPER)) as (proc, run_id, _pgid):
        assert_clean_exit(orchard("cancel"), 0)
        proc.wait(timeout=15)
        assert (proc.returncode, run_status(orchard, run_id)) == (130, "cancelled")


def test_cancel_an_interrupted_run_cancels_its_waiting_tasks_and_resume_queues_them_again(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    go = repo.parent / "go"
    tasks = task("done", "@write done.txt d") + task(
        "s", f"@wait-for {go} 60\n@write s.txt s", extra="    depends_on: [done]\n") + task(
        "w", "@write w.txt w", extra="    depends_on: [s]\n")
    with live_run(repo, write_plan(plan_text(tasks))) as (proc, run_id, _pgid):
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the run stops and can be resumed
        proc.wait(timeout=15)
        assert proc.returncode == 130
    assert run_status(orchard) == "interrupted"
    waiting = statuses(orchard)
    assert waiting["done"] == "merged" and waiting["s"] in ("queued", "pending") and waiting["w"] == "pending"

    cancel = orchard("cancel", run_id)
    assert_clean_exit(cancel, 0)
    assert statuses(orchard) == {"done": "merged", "s": "cancelled", "w": "cancelled"}
    assert run_status(orchard) == "cancelled"

    again = orchard("cancel")
    assert_clean_exit(again, 2)
    assert "already cancelled" in again.err
    go.touch()
    resume = orchard("resume")  # a cancelled run goes on: its cancelled tasks are queued again, merged ones stay
    assert_clean_exit(resume, 0)
    assert statuses(orchard) == {"done": "merged", "s": "merged", "w": "merged"}
    assert run_status(orchard) == "completed"
    attempts = {t["id"]: t["attempts"] for t in orchard("status", "--json").json()["tasks"]}
    assert attempts["done"] == 1  # never ran again


def test_cancel_after_the_orchestrator_died_stops_its_leftover_agents(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path,
        leftover_groups: list[int]) -> None:
    # unconfined: in bubblewrap (`--die-with-parent`) the agent dies with orchard (test_sandbox checks that)
    plan = write_plan("sandbox: none\n" + SLEEPER)
    with live_run(repo, plan) as (proc, dead_id, dead_group):
        leftover_groups.append(dead_group)
        proc.send_signal(signal.SIGKILL)  # a crash: no chance to stop the agent
        proc.wait(timeout=10)
        assert group_alive(dead_group)
    assert run_status(orchard, dead_id) == "running"  # what the dead process left in the store

    with live_run(repo, plan) as (proc, live_id, live_group):  # another run holds the repository meanwhile
        leftover_groups.append(live_group)
        started = time.monotonic()
        follow = orchard("logs", "--follow", "s", "--run", dead_id, timeout=30)
        assert_clean_exit(follow, 0)
        assert time.monotonic() - started < 8, "logs --follow waited on a run nobody is running"

        # another repository's agent that happens to carry the same run id (a collision): never ours to kill
        foreign = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(60)"], start_new_session=True,
                                   env={**os.environ, "ORCHARD_RUN_ID": dead_id,
                                        "ORCHARD_WORKTREE": f"/elsewhere/.orchard/worktrees/{dead_id}/s"})
        leftover_groups.append(foreign.pid)
        cancel = orchard("cancel", dead_id)
        assert_clean_exit(cancel, 0)
        assert f"run {dead_id} cancelled" in cancel.out
        assert foreign.poll() is None, "cancel killed another repository's agent with the same run id"
        foreign.kill()
        foreign.wait()
        deadline = time.monotonic() + 5
        while group_alive(dead_group) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_alive(dead_group), "cancel left the dead run's agent running"
        assert group_alive(live_group) and proc.poll() is None, "cancelling the dead run hurt the live one"
        assert statuses(orchard, dead_id) == {"s": "cancelled", "w": "cancelled"}
        assert_clean_exit(orchard("cancel", live_id), 0)
        assert proc.wait(timeout=15) in (1, 130)

    assert query(repo, "SELECT outcome FROM attempts WHERE finished_at IS NULL") == []
    assert query(repo, "SELECT outcome FROM attempts WHERE run_id = ?", dead_id) == [("interrupted",)]


def test_finished_failed_run_retry_refuses_merged_tasks_and_cancel_keeps_final_statuses(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    tasks = task("ok", "@write ok.txt ok") + task("bad", "@exit 1") + task(
        "after", "@write after.txt a", extra="    depends_on: [bad]\n")
    run_id = run_id_of(orchard("run", str(write_plan(plan_text(tasks)))))
    tip = git(repo, "rev-parse", f"orchard/{run_id}/integration")
    again = orchard("retry", "ok", "bad")  # a merged task never runs twice: its changes would apply twice
    assert_clean_exit(again, 2)
    assert "ok" in again.err and "already merged" in again.err
    assert git(repo, "rev-parse", f"orchard/{run_id}/integration") == tip

    cancel = orchard("cancel")
    assert_clean_exit(cancel, 0)
    assert statuses(orchard) == {"ok": "merged", "bad": "failed", "after": "blocked"}
    assert run_status(orchard) == "cancelled"


# ---- clean ------------------------------------------------------------------------------------------------------


def test_clean_finished_cleans_every_finished_run_and_leaves_an_interrupted_one(
        orchard: Callable[..., Result], write_plan: Callable[..., Path], repo: Path) -> None:
    plan = write_plan(plan_text(task("bad", "@write half.txt h\n@exit 1")))
    finished = [run_id_of(orchard("run", str(plan))) for _ in range(2)]
    with live_run(repo, write_plan(SLEEPER, "sleeper.yaml")) as (proc, interrupted, _pgid):
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    assert run_status(orchard, interrupted) == "interrupted"
    kept = [(repo / ".orchard" / "worktrees" / run / "bad") for run in finished]
    assert all(path.is_dir() for path in kept)

    assert_clean_exit(orchard("clean", finished[0], "--finished"), 2)
    cleaned = orchard("clean", "--finished")  # not only the latest (which is the interrupted one)
    assert_clean_exit(cleaned, 0)
    assert not any(path.exists() for path in kept)
    assert not any(b.startswith((f"orchard/{finished[0]}/task/", f"orchard/{finished[1]}/task/"))
                   for b in branches(repo))
    assert all(f"run {run}:" in cleaned.out for run in finished) and interrupted not in cleaned.out
    assert run_status(orchard, interrupted) == "interrupted"


def test_clean_removes_kept_worktrees_and_task_branches(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    plan = write_plan(plan_text(task("good", "@write good.txt g") + task("bad", "@write half.txt h\n@exit 1")))
    first = run_id_of(orchard("run", str(plan)))
    second = run_id_of(orchard("run", str(plan)))
    kept = {run: (repo / ".orchard" / "worktrees" / run / "bad").resolve() for run in (first, second)}
    for run, path in kept.items():
        assert path.is_dir() and (path / "half.txt").exists()
        assert path in worktree_paths(repo)
        assert f"orchard/{run}/task/bad" in branches(repo)

    both = orchard("clean", first, "--all")
    assert_clean_exit(both, 2)
    assert kept[first].is_dir()

    latest = orchard("clean")  # default: the latest run only
    assert_clean_exit(latest, 0)
    assert not kept[second].exists() and kept[second] not in worktree_paths(repo)
    assert not any(b.startswith(f"orchard/{second}/task/") for b in branches(repo))
    assert f"orchard/{second}/integration" in branches(repo)  # results are kept without --branches
    assert kept[first].is_dir()

    assert (repo / ".orchard" / "pool").is_dir() and any((repo / ".orchard" / "pool").iterdir())  # "good"'s
    everything = orchard("clean", "--all")
    assert_clean_exit(everything, 0)
    assert "removed 1 reusable worktree(s)" in everything.out
    assert not kept[first].exists()
    assert worktree_paths(repo) == {own_git(repo).resolve()}  # orchard's bare repository alone
    assert branches(repo) == {f"orchard/{first}/integration", f"orchard/{second}/integration"}
    assert branches(own_git(repo)) == branches(repo)  # task branches gone from orchard's repository too
    assert "worktree" not in git(repo, "worktree", "prune", "--dry-run", "-v")

    git(repo, "checkout", "-q", f"orchard/{first}/integration")  # the user is looking at the first results
    with_branches = orchard("clean", "--all", "--branches")
    assert_clean_exit(with_branches, 0)
    assert branches(repo) == {f"orchard/{first}/integration"}  # a checked-out branch stays ...
    assert f"run {first}: removed 0 worktree(s), 0 branch(es)" in with_branches.out  # ... and is not counted
    assert f"run {second}: removed 0 worktree(s), 1 branch(es)" in with_branches.out
    git(repo, "checkout", "-q", "main")
    assert_clean_exit(orchard("clean", first, "--branches"), 0)
    assert branches(repo) == set()


# ---- land -------------------------------------------------------------------------------------------------------


def test_land_fast_forwards_a_clean_checkout(orchard: Callable[..., Result], write_plan: Callable[[str], Path],
                                             repo: Path) -> None:
    result = orchard("run", str(write_plan(plan_text(task("a", "@write feature.txt shipped")))))
    assert_clean_exit(result, 0)
    run_id = run_id_of(result)
    assert not (repo / "feature.txt").exists()
    land = orchard("land")
    assert_clean_exit(land, 0)
    assert "fast-forward" in land.out
    assert git(repo, "rev-parse", "main") == git(repo, "rev-parse", f"orchard/{run_id}/integration")
    assert (repo / "feature.txt").read_text() == "shipped"
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    again = orchard("land", run_id)
    assert_clean_exit(again, 0)
    assert "up-to-date" in again.out
    cancel = orchard("cancel")
    assert_clean_exit(cancel, 2)
    assert "already completed" in cancel.err


def test_land_refuses_a_dirty_checkout(orchard: Callable[..., Result], write_plan: Callable[[str], Path],
                                       repo: Path) -> None:
    result = orchard("run", str(write_plan(plan_text(task("a", "@write feature.txt shipped")))))
    assert_clean_exit(result, 0)
    (repo / "README.md").write_text("local edit\n")
    main_before = git(repo, "rev-parse", "main")
    land = orchard("land")
    assert_clean_exit(land, 2)
    assert "README.md" in land.err
    assert git(repo, "rev-parse", "main") == main_before
    assert (repo / "README.md").read_text() == "local edit\n"
    assert not (repo / "feature.txt").exists()


def test_run_with_land_lands_when_everything_merged(orchard: Callable[..., Result],
                                                    write_plan: Callable[[str], Path], repo: Path) -> None:
    result = orchard("run", "--land", str(write_plan(plan_text(task("a", "@write feature.txt shipped")))))
    assert_clean_exit(result, 0)
    run_id = run_id_of(result)
    assert "landed" in result.out
    assert git(repo, "rev-parse", "main") == git(repo, "rev-parse", f"orchard/{run_id}/integration")
    assert (repo / "feature.txt").read_text() == "shipped"


def test_run_with_land_does_not_land_a_failed_run(orchard: Callable[..., Result],
                                                  write_plan: Callable[[str], Path], repo: Path) -> None:
    main_before = git(repo, "rev-parse", "main")
    tasks = task("a", "@write feature.txt shipped") + task("b", "@exit 1")
    result = orchard("run", "--land", str(write_plan(plan_text(tasks))))
    assert_clean_exit(result, 1)
    assert git(repo, "rev-parse", "main") == main_before
    assert not (repo / "feature.txt").exists()


# ---- output to a closed pipe ------------------------------------------------------------------------------------


@pytest.mark.parametrize("json_mode", [True, False])
def test_run_into_a_closed_pipe_finishes_quietly(repo: Path, write_plan: Callable[[str], Path],
                                                 json_mode: bool) -> None:
    """`orchard run … | head -1`: the run still finishes (exit 0) and prints no traceback."""
    closed = repo.parent / f"closed-{json_mode}"  # the agent goes on only once the reader has gone
    plan = write_plan(plan_text(task("a", f"@wait-for {closed}\n@write a.txt a") + task("b", "@write b.txt b")))
    proc = subprocess.Popen([PYTHON, "-m", "orchard", "run", *(["--json"] if json_mode else []), str(plan)], cwd=repo,
                            text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    closed.touch()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "Broken pipe" not in err, err
    assert run_status(lambda *a: run_orchard(*a, cwd=repo)) == "completed"
