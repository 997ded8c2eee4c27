"""`orchard diff TASK` and `orchard show TASK` (issue 15, item 3): a merged task's merged change, a failed task's
branch against its start, a conflicted task's result; an agent's escape sequences shown, not obeyed; and all that
is recorded of a task: attempts, outcomes, phases, feedback, conflicts, the worktree kept for inspection."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result, git
from tests.test_cli import assert_clean_exit
from tests.test_engine_acceptance import _conflict_plan, plan_text, task


def test_diff_of_a_merged_and_a_failed_task(orchard: Callable[..., Result], write_plan: Callable[[str], Path],
                                            repo: Path) -> None:
    # a file with a colour sequence, which the diff's context shows; bad's verify fails, so its result is committed
    # on its branch and kept there
    (repo / "tty.txt").write_text("\x1b[31mred\n")
    git(repo, "add", "tty.txt")
    git(repo, "commit", "-q", "-m", "a coloured file")
    bad = task("bad", "@write half.txt half done\n@append tty.txt more", '    retries: 0\n    verify: ["false"]\n')
    crash = task("crash", "@write lost.txt never committed\n@exit 1", "    retries: 0\n")
    plan = write_plan("preflight: off\n" + plan_text(task("ok", "@write ok.txt merged line") + bad + crash))
    assert_clean_exit(orchard("run", str(plan)), 1)

    merged = orchard("diff", "ok")
    assert_clean_exit(merged, 0)
    assert merged.out.startswith("# ok (merged): ")
    assert "+++ b/ok.txt" in merged.out and "+merged line" in merged.out and "half.txt" not in merged.out

    failed = orchard("diff", "bad")  # its branch, kept for inspection, against its attempt's start
    assert_clean_exit(failed, 0)
    assert "# bad (failed)" in failed.out and "+half done" in failed.out and "ok.txt" not in failed.out
    assert "\x1b" not in failed.out and "\\x1b[31mred" in failed.out  # shown, not sent to the terminal
    assert "\x1b[31m" in orchard("diff", "bad", "--raw").out

    stat = orchard("diff", "bad", "--stat")
    assert_clean_exit(stat, 0)
    assert "half.txt | 1 +" in stat.out and "+++" not in stat.out

    nothing = orchard("diff", "crash")  # the agent failed: orchard committed nothing, and says where to look
    assert_clean_exit(nothing, 0)
    assert "nothing committed: the latest attempt ended agent_error" in nothing.out
    assert "worktree is kept: git -C" in nothing.out and "+never" not in nothing.out

    unknown = orchard("diff", "nope")
    assert_clean_exit(unknown, 2)

    shown = orchard("show", "ok", "--json").json()
    assert shown["merged_commit"] and shown["worktree"] is None and shown["feedback"] is None
    assert {"agent", "merge"} <= set(shown["attempts"][0]["phases"])
    assert shown["attempts"][0]["prompt"].endswith("ok.1.md")
    failing = orchard("show", "bad", "--json").json()
    assert failing["attempts"][0]["outcome"] == "verify_failed" and "verify" in failing["attempts"][0]["phases"]
    assert failing["feedback"] and "false" in failing["feedback"]  # what a retry's prompt would be told
    assert failing["worktree"] and Path(failing["worktree"], "half.txt").is_file()
    human = orchard("show", "bad")
    assert "(kept for inspection)" in human.out and "phases: " in human.out and "feedback for the next" in human.out


def test_diff_of_a_conflicted_task_and_of_one_that_never_ran(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    (repo / "shared.txt").write_text("base\n")
    git(repo, "add", "shared.txt")
    git(repo, "commit", "-q", "-m", "shared")
    plan = _conflict_plan(retries=0) + task("after", "@write a.txt a", "    depends_on: [second]\n")
    assert_clean_exit(orchard("run", str(write_plan(plan))), 1)
    conflicted = orchard("diff", "second")
    assert_clean_exit(conflicted, 0)
    assert "# second (conflict)" in conflicted.out and "+from second" in conflicted.out
    shown = orchard("show", "second", "--json").json()
    assert shown["status"] == "conflict" and shown["conflicts"] == "shared.txt"
    assert "conflicts: shared.txt" in orchard("show", "second").out
    never = orchard("diff", "after")  # blocked: no attempt, nothing to show
    assert_clean_exit(never, 2)
    assert "no change to show yet" in never.err and "blocked" in never.err
