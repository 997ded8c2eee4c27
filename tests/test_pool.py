"""Reusable worktrees: a finished task's worktree serves the next task (reset, cleaned), is kept between runs up to
the pool size, and anything in the pool that is not a sound worktree of the repository is thrown away unused."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result, git, own_git, parked_worktrees, query, run_orchard
from tests.test_engine_acceptance import checkout_state, plan_text, task


def admin_names(repo: Path) -> set[str]:
    """git's names for the linked worktrees: the directory name each had when it was created (moves keep it)."""
    admin = own_git(repo) / "worktrees"
    return {p.name for p in admin.iterdir()} if admin.is_dir() else set()


def integration_files(repo: Path, orchard: Callable[..., Result]) -> set[str]:
    run_id = orchard("status", "--json").json()["run"]["id"]
    return set(git(repo, "ls-tree", "-r", "--name-only", f"orchard/{run_id}/integration").split())


def test_one_checkout_serves_a_chain_and_nothing_leaks_between_tasks(
        repo: Path, write_plan: Callable[[str], Path], orchard: Callable[..., Result]) -> None:
    (repo / ".gitignore").write_text("build/\n")
    git(repo, "commit", "-qam", "ignore build output")
    tasks = (task("t0", "@write build/junk.txt x\n@write t0.txt zero")
             + task("t1", "@if-contains build/junk.txt x @write leaked.txt yes\n@derive t0.txt t1.txt one+",
                    "    depends_on: [t0]\n")
             + task("t2", "@derive t1.txt t2.txt two+", "    depends_on: [t1]\n"))
    result = orchard("run", str(write_plan(plan_text(tasks, parallel=1))))
    assert result.code == 0, result.err
    assert len(admin_names(repo)) == 1  # created once, for the first task, then reset for the other two
    assert len(parked_worktrees(repo)) == 1
    files = integration_files(repo, orchard)
    assert {"t0.txt", "t1.txt", "t2.txt"} <= files and "leaked.txt" not in files
    run_id = orchard("status", "--json").json()["run"]["id"]
    assert git(repo, "show", f"orchard/{run_id}/integration:t2.txt").strip() == "two+one+zero"
    starts = query(repo, "SELECT task_id, start_commit FROM attempts ORDER BY id")
    assert len({commit for _, commit in starts}) == 3  # each started from the tip its predecessor's merge made


def test_the_pool_is_kept_between_runs_up_to_its_size(
        repo: Path, write_plan: Callable[[str], Path], orchard: Callable[..., Result]) -> None:
    # all three in flight at once, so the first run makes three worktrees and the later ones find three parked
    plan = write_plan(plan_text("".join(task(f"w{i}", f"@barrier all 3\n@write w{i}.txt {i}") for i in range(3)),
                                parallel=3))
    assert orchard("run", str(plan)).code == 0
    first = parked_worktrees(repo)
    assert len(first) == 3  # the run's width
    made = admin_names(repo)
    assert orchard("run", str(plan), "--pool-size", "1").code == 0
    assert len(parked_worktrees(repo)) == 1
    assert len(admin_names(repo)) == 1 and admin_names(repo) < made  # reused, not made anew
    assert orchard("run", str(plan), "--pool-size", "0").code == 0
    assert parked_worktrees(repo) == [] and admin_names(repo) == set()


def test_unsound_pool_entries_are_discarded_unused(
        repo: Path, write_plan: Callable[[str], Path], orchard: Callable[..., Result]) -> None:
    before = checkout_state(repo)
    pool = repo / ".orchard" / "pool"
    pool.mkdir(parents=True)
    # a directory whose .git file points at the user's own repository: git run inside it would move the user's
    # branch; and a half-moved worktree git no longer knows
    (pool / "hijack").mkdir()
    (pool / "hijack" / ".git").write_text(f"gitdir: {repo / '.git'}\n")
    (pool / "stray").mkdir()
    (pool / "stray" / "file.txt").write_text("left by a crash\n")
    result = orchard("run", str(write_plan(plan_text(task("a", "@write a.txt a") + task("b", "@write b.txt b"),
                                                     parallel=2))))
    assert result.code == 0, result.err
    assert not (pool / "hijack").exists() and not (pool / "stray").exists()
    assert len(parked_worktrees(repo)) == 2
    assert checkout_state(repo) == before and git(repo, "branch", "--show-current").strip() == "main"


def test_a_retry_never_runs_git_in_a_worktree_whose_git_file_an_agent_rewrote(
        repo: Path, write_plan: Callable[[str], Path], orchard: Callable[..., Result]) -> None:
    before = checkout_state(repo)
    hijack = f"@if-attempt 1 @write .git gitdir: {repo / '.git'}\n@if-attempt 1 @exit 1"
    plan = write_plan(plan_text(task("h", f"{hijack}\n@write h.txt h", "    retries: 1\n")))
    result = orchard("run", str(plan))
    assert result.code == 0, result.err
    assert "h.txt" in integration_files(repo, orchard)
    assert checkout_state(repo) == before and git(repo, "branch", "--show-current").strip() == "main"


def test_a_retry_after_the_agent_deleted_its_own_worktree_gets_a_new_one(
        repo: Path, write_plan: Callable[[str], Path], orchard: Callable[..., Result]) -> None:
    """git still counts the deleted worktree's branch as checked out until the record is pruned."""
    # Both start together (so each has a worktree of its own); the first attempt of s deletes its worktree only once
    # `other` has parked its own (its task link is gone), so the retry takes that one while git still records the
    # deleted one as s's.
    other_link = repo / ".orchard" / "worktrees" / "*" / "other"
    first = f"@if-attempt 1 @barrier start 2\n@if-attempt 1 @wait-gone {other_link}\n"
    tasks = (task("other", "@barrier start 2\n@write o.txt o")
             + task("s", first + "@if-attempt 1 @rmself\n@if-attempt 1 @exit 1\n@write s.txt s", "    retries: 1\n"))
    result = orchard("run", str(write_plan(plan_text(tasks, parallel=2))))
    assert result.code == 0, result.out
    assert {"o.txt", "s.txt"} <= integration_files(repo, orchard)
    assert len(parked_worktrees(repo)) <= 2
    used = dict(query(repo, "SELECT task_id || '.' || number, worktree FROM attempts"))
    assert used["s.2"] == used["other.1"]  # the retry ran in the worktree `other` parked, not in a new one
    assert admin_names(repo) == {Path(used["other.1"]).name}  # and git forgot the one the agent deleted


def test_a_barrier_that_cannot_be_met_fails_instead_of_hanging(
        repo: Path, write_plan: Callable[[str], Path], orchard: Callable[..., Result]) -> None:
    """The fake agent's rendezvous: tasks that never run together (parallel 1) time out with exit 9 and say why."""
    tasks = task("a", "@barrier pair 2 0.5\n@write a.txt a") + task("b", "@barrier pair 2 0.5\n@write b.txt b")
    started = time.monotonic()
    result = orchard("run", str(write_plan(plan_text(tasks, parallel=1))))
    assert result.code == 1 and time.monotonic() - started < 30
    # b came after a had given up: a withdrew its marker, so b did not pass a barrier nobody else waited at
    assert query(repo, "SELECT task_id, exit_code FROM attempts ORDER BY task_id") == [("a", 9), ("b", 9)]
    logs = sorted((repo / ".orchard" / "runs").glob("*/logs/*.1.log"))
    assert len(logs) == 2 and all("barrier 'pair' timed out" in log.read_text() for log in logs)


def test_pool_size_from_the_environment(repo: Path, write_plan: Callable[[str], Path]) -> None:
    plan = write_plan(plan_text(task("e", "@write e.txt e")))
    assert run_orchard("run", str(plan), cwd=repo, env={"ORCHARD_POOL_SIZE": "0"}).code == 0
    assert parked_worktrees(repo) == []
    bad = run_orchard("run", str(plan), cwd=repo, env={"ORCHARD_POOL_SIZE": "lots"})
    assert bad.code == 2 and "ORCHARD_POOL_SIZE" in bad.err and "Traceback" not in bad.err


def test_a_task_link_pointed_elsewhere_is_dropped_never_followed(
        repo: Path, write_plan: Callable[[str], Path], orchard: Callable[..., Result]) -> None:
    """A task holds its worktree through `.orchard/worktrees/<run>/<task>`; an unconfined agent can point that link
    anywhere, here at the run's logs. The retry and `orchard clean` drop the link and leave what it led to alone."""
    plan = write_plan(plan_text(task("k", "@if-attempt 1 @exit 1\n@write k.txt k")))
    assert orchard("run", str(plan)).code == 1
    run_id = orchard("status", "--json").json()["run"]["id"]
    link, logs = repo / ".orchard" / "worktrees" / run_id / "k", repo / ".orchard" / "runs" / run_id
    kept = link.resolve()
    assert link.is_symlink() and kept.parent == (repo / ".orchard" / "pool").resolve()
    link.unlink()
    link.symlink_to(logs)
    assert orchard("retry", "k").code == 0
    assert (logs / "logs" / "k.1.log").is_file()  # the link was not taken for a worktree, nor removed through
    assert "k.txt" in integration_files(repo, orchard)
    link.symlink_to(logs)  # and once more, for clean
    assert orchard("clean", run_id).code == 0
    assert not link.is_symlink() and (logs / "logs" / "k.1.log").is_file()
    assert not kept.exists()  # the worktree k held was thrown away, found by git's record, not by the link
