"""The end screen of `orchard run`: for each task that did not merge, why in one line and the commands that look at
it, then the retry and landing (the whole run only when everything merged; else `land --partial`, which says what it
leaves out); and the one-line picker of what went wrong (`core.error_lines`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from orchard.core.error_lines import LINE_MAX, first_error_line
from tests.conftest import PYTHON, Result, git
from tests.test_cli import assert_clean_exit, run_id_of
from tests.test_engine_acceptance import plan_text, task

PYTEST_OUTPUT = """\
============================= test session starts ==============================
platform linux -- Python 3.11.7, pytest-8.3.2, pluggy-1.5.0
rootdir: /work/shop
collected 3 items

tests/test_total.py .F.                                                  [100%]

=================================== FAILURES ===================================
__________________________________ test_total __________________________________

    def test_total():
>       assert total([1, 2]) == 4, "wrong total"
E       AssertionError: wrong total
E       assert 3 == 4
E        +  where 3 = total([1, 2])

tests/test_total.py:5: AssertionError
=========================== short test summary info ============================
FAILED tests/test_total.py::test_total - AssertionError: wrong total
========================= 1 failed, 2 passed in 0.03s ==========================
"""

TRACEBACK = """\
Traceback (most recent call last):
  File "/work/shop/check.py", line 9, in <module>
    main()
  File "/work/shop/check.py", line 6, in main
    raise ValueError("price must be positive")
ValueError: price must be positive
"""

UNITTEST_OUTPUT = """\
F
======================================================================
FAIL: test_total (test_shop.TestTotal.test_total)
----------------------------------------------------------------------
Traceback (most recent call last):
  File "/work/shop/test_shop.py", line 5, in test_total
    self.assertEqual(total([1, 2]), 4)
AssertionError: 3 != 4

----------------------------------------------------------------------
Ran 1 test in 0.000s

FAILED (failures=1)
"""

GIT_CONFLICT = """\
Auto-merging shared.txt
CONFLICT (content): Merge conflict in shared.txt
Automatic merge failed; fix conflicts and then commit the result.
"""

AGENT_ERROR = "agent_error: exited with code 4: reading the repository\nexiting with 4"


@pytest.mark.parametrize(("text", "line"), [
    (PYTEST_OUTPUT, "FAILED tests/test_total.py::test_total - AssertionError: wrong total"),
    # pytest without its short summary (`-rN`, or a tail that lost it): the explanation, not the quoted source line
    (PYTEST_OUTPUT.split("=========================== short")[0], "AssertionError: wrong total"),
    (TRACEBACK, "ValueError: price must be positive"),
    (UNITTEST_OUTPUT, "AssertionError: 3 != 4"),  # not `FAILED (failures=1)`, which says nothing
    (GIT_CONFLICT, "CONFLICT (content): Merge conflict in shared.txt"),
    (AGENT_ERROR, "agent_error: exited with code 4: reading the repository"),
    ("--- FAIL: TestTotal (0.00s)\n    total_test.go:8: got 3, want 4\nFAIL\nFAIL\texample.com/shop\t0.002s\n",
     "--- FAIL: TestTotal (0.00s)"),
    ("Found 0 errors in 12 files\nsrc/shop/api.py:3: error: Incompatible return value type\n",
     "src/shop/api.py:3: error: Incompatible return value type"),
    ("\x1b[31mE       assert 3 == 4\x1b[0m\n", "assert 3 == 4"),  # `pytest --color=yes`
    ("\n=====\nsomething odd happened\nand then more\n", "something odd happened"),
    ("", ""),
    ("   \n\n", ""),
])
def test_the_first_error_line_is_the_one_that_says_what_went_wrong(text: str, line: str) -> None:
    assert first_error_line(text) == line


def test_a_long_error_line_is_cut() -> None:
    line = first_error_line("AssertionError: " + "x" * 500)
    assert len(line) == LINE_MAX and line.endswith("…") and line.startswith("AssertionError: xxx")


# ---- the screen after real runs -------------------------------------------------------------------------------

WRONG_TOTAL = f'    verify: ["{PYTHON}", "-c", "assert 1 == 2, \'wrong total\'"]\n'


def failing_plan() -> str:
    """One task merges; one fails its verify; one's agent fails; one depends on that one (blocked)."""
    return "preflight: off\n" + plan_text(
        task("ok", "@write ok.txt ok")
        + task("total", "@write total.txt 3", WRONG_TOTAL)
        + task("crash", "@print reading the repository\n@exit 4")
        + task("child", "@write child.txt c", "    depends_on: [crash]\n"))


def end_screen_of(result: Result) -> str:
    """What follows the progress lines: the summary and the next steps."""
    lines = result.out.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^run \S+ (failed|completed|interrupted)", line))
    return "\n".join(lines[start:])


def test_a_failed_run_says_why_each_task_did_not_merge_and_what_to_do(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    result = orchard("run", str(write_plan(failing_plan())))
    assert_clean_exit(result, 1)
    run_id, screen = run_id_of(result), end_screen_of(result)
    assert "tasks: 1/4 merged" in screen
    assert "did not merge:" in screen
    total = screen.index("total  failed · verify_failed")
    assert screen.index("AssertionError: wrong total") > total  # the verify's failing assertion, under its task
    assert "orchard logs total   orchard show total" in screen
    assert "crash  failed · agent_error" in screen and "exited with code 4: reading the repository" in screen
    assert "orchard logs crash   orchard show crash" in screen
    assert "child  blocked by crash" in screen
    assert "try again: orchard retry total crash (the tasks they blocked go again with them)" in screen
    assert f"3 tasks did not merge; `orchard land --partial {run_id}` lands the 1 merged task only" in screen
    assert "land with" not in screen and f"orchard land {run_id}" not in screen  # only the partial landing
    assert "--run" not in screen  # the latest run: the commands find it by themselves

    # the commands it names work as it says
    logs = orchard("logs", "total")
    assert_clean_exit(logs, 0)
    assert "AssertionError: wrong total" in logs.out


def test_a_run_that_merged_everything_suggests_landing_it(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path]) -> None:
    result = orchard("run", str(write_plan(plan_text(task("a", "@write a.txt a") + task("b", "@write b.txt b")))))
    assert_clean_exit(result, 0)
    run_id, screen = run_id_of(result), end_screen_of(result)
    assert f"results on branch orchard/{run_id}/integration; land with: orchard land {run_id}" in screen
    assert "did not merge" not in screen and "--partial" not in screen and "retry" not in screen


def test_run_with_land_says_it_landed_instead_of_suggesting_it(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    result = orchard("run", "--land", str(write_plan(plan_text(task("a", "@write a.txt a")))))
    assert_clean_exit(result, 0)
    run_id, screen = run_id_of(result), end_screen_of(result)
    assert f"landed orchard/{run_id}/integration on main: fast-forward" in screen
    assert "land with" not in screen
    assert (repo / "a.txt").read_text() == "a"


def test_land_takes_a_run_that_did_not_merge_everything_only_with_partial(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    result = orchard("run", str(write_plan(failing_plan())))
    assert_clean_exit(result, 1)
    run_id = run_id_of(result)
    main = git(repo, "rev-parse", "main")

    refused = orchard("land")
    assert_clean_exit(refused, 1)
    assert f"run {run_id}: 3 of 4 tasks did not merge (total, crash, child)" in refused.err
    assert f"`orchard land --partial {run_id}` lands the 1 merged task only" in refused.err
    assert git(repo, "rev-parse", "main") == main  # nothing landed

    partial = orchard("land", "--partial")
    assert_clean_exit(partial, 0)
    assert f"landed orchard/{run_id}/integration on main: fast-forward" in partial.out
    assert "landed the 1 merged task only (3 did not merge: total, crash, child)" in partial.out
    assert (repo / "ok.txt").read_text() == "ok" and not (repo / "total.txt").exists()


def test_the_commands_name_the_run_when_it_is_not_the_latest(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    first = orchard("run", str(write_plan(plan_text(task("crash", "@exit 4")))))
    assert_clean_exit(first, 1)
    first_id = run_id_of(first)
    other = tmp_path / "other.yaml"
    other.write_text(plan_text(task("other", "@write o.txt o")))
    assert_clean_exit(orchard("run", str(other)), 0)
    again = orchard("retry", "crash", "--run", first_id)  # fails again: the older run, no longer the latest
    assert_clean_exit(again, 1)
    screen = end_screen_of(again)
    assert f"orchard logs crash --run {first_id}   orchard show crash --run {first_id}" in screen
    assert f"try again: orchard retry crash --run {first_id}" in screen
    assert "nothing merged, so there is nothing to land" in screen
