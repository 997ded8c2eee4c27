"""The live dashboard shows the whole run in the terminal it has: every task has a row (those waiting too), what
needs the user comes first, the queue line fits the width without losing the elapsed time, narrow terminals lose
columns, and the counts include what earlier sessions of the run did (issue 14, items 3 and 5)."""

from __future__ import annotations

import io
import re
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

import orchard
from orchard.core.events import (
    AgentActivity,
    AttemptFinished,
    AttemptStarted,
    OrchardEvent,
    QueueChanged,
    RunFinished,
    RunHeld,
    RunStarted,
    TaskStatusChanged,
)
from orchard.core.model import Outcome, RunStatus, TaskStatus
from orchard.ui.dashboard import Dashboard, render
from orchard.ui.snapshot import Snapshot
from tests.conftest import query, wait_for
from tests.test_cli_manage import live_run
from tests.test_engine_acceptance import plan_text, task

S = TaskStatus
RUN = "20261203-172714-8cbf3202d866"  # as long as real run ids are
T0 = 1_000_000.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def started(ids: list[str], *, parallel: int = 4, statuses: dict[str, TaskStatus] | None = None,
            resumed: bool = False, cost_usd: float = 0.0) -> Snapshot:
    snap = Snapshot()
    snap.apply(RunStarted(run_id=RUN, ts=T0, base="main", base_commit="0" * 40, integration_branch="i",
                          tasks=len(ids), parallel=parallel, resumed=resumed,
                          statuses=statuses or dict.fromkeys(ids, S.PENDING), cost_usd=cost_usd))
    return snap


def status(snap: Snapshot, task_id: str, to: TaskStatus, at: float, reason: str = "") -> None:
    snap.apply(TaskStatusChanged(run_id=RUN, ts=at, task=task_id, status=to, attempt=1, reason=reason))


def running(snap: Snapshot, task_id: str, at: float, *, agent: str = "claude", activity: str = "",
            cost: float = 0.0) -> None:
    status(snap, task_id, S.RUNNING, at)
    snap.apply(AttemptStarted(run_id=RUN, ts=at, task=task_id, attempt=1, agent=agent, branch="b", worktree="w",
                              start_commit="0" * 40))
    if cost:  # an attempt that ended (as if it were an earlier one): what the row's cost is of
        snap.apply(AttemptFinished(run_id=RUN, ts=at, task=task_id, attempt=1, outcome=Outcome.API_ERROR,
                                   cost_usd=cost))
    if activity:
        snap.apply(AgentActivity(run_id=RUN, ts=at, task=task_id, attempt=1, text=activity))


def shown(snap: Snapshot, now: float, *, width: int = 80, height: int = 24) -> list[str]:
    console = Console(width=width, height=height, record=True, file=io.StringIO())
    console.print(render(snap, now))
    return console.export_text().splitlines()


def busy_run(count: int = 30) -> Snapshot:
    """`count` tasks: 4 running (with cost and long activity), 10 merged, 2 failed, 1 conflict, 1 blocked, the
    rest waiting without any event of their own yet."""
    ids = [f"task-{i:02d}" for i in range(count)]
    snap = started(ids)
    for i in range(4):
        running(snap, ids[i], T0 + i, activity="editing src/shop/models.py to add the discount rules " * 2,
                cost=1.25 * (i + 1))
    for i in range(4, 14):
        status(snap, ids[i], S.MERGED, T0 + 10 + i)
    status(snap, ids[14], S.FAILED, T0 + 30, "verify_failed")
    status(snap, ids[15], S.FAILED, T0 + 31, "agent_error")
    status(snap, ids[16], S.CONFLICT, T0 + 32, "conflict on shop/api.py")
    status(snap, ids[17], S.BLOCKED, T0 + 33, "dependency 'task-14' did not merge")
    return snap


def test_the_queue_line_fits_80_columns_and_keeps_the_elapsed_time() -> None:
    snap = busy_run()
    snap.apply(RunHeld(run_id=RUN, ts=T0, reason="held: memory 1.2 GB free < 2.0 GB"))
    lines = shown(snap, T0 + 3725)  # 1h02m05s into the run
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines), lines
    queue = lines[0]
    assert "1h02m" in queue
    assert "waiting 12 | running 4" in queue and "merged 10/30" in queue
    assert "failed 3" in queue and "blocked 1" in queue  # failed and conflict; blocked on its own
    assert "$12.50" in queue
    assert "held: memory 1.2 GB free < 2.0 GB" in lines[1]  # no room beside the figures: a line of its own
    # on a wide terminal, all of it in one line: the full run id and the free slots
    wide = shown(snap, T0 + 3725, width=200, height=40)[0]
    assert wide == (f"orchard {RUN}  waiting 12 | running 4 | free 0  ·  merged 10/30  failed 3  blocked 1  ·  "
                    "1h02m  ·  $12.50  ·  held: memory 1.2 GB free < 2.0 GB")
    # a little narrower, the free slots go first, to keep the hold reason beside the figures
    assert shown(snap, T0 + 3725, width=160, height=40)[0].endswith("blocked 1  ·  1h02m  ·  $12.50  ·  held: "
                                                                     "memory 1.2 GB free < 2.0 GB")


@pytest.mark.parametrize("width", [60, 40, 30])
def test_narrower_terminals_still_show_the_elapsed_time(width: int) -> None:
    lines = shown(busy_run(), T0 + 3725, width=width)
    assert "1h02m" in lines[0] and all(len(line) <= width for line in lines), lines


def test_every_task_has_a_row_and_those_that_need_the_user_come_first() -> None:
    snap = busy_run()
    lines = shown(snap, T0 + 60, width=160, height=40)
    rows = [line.split()[:2] for line in lines[2:] if line.startswith("task-")]
    order = [state for _, state in rows]
    # active, then failed/conflict/blocked (own failures first, most recent first), then waiting, then merged
    assert order == ["running"] * 4 + ["conflict", "failed", "failed", "blocked"] + ["pending"] * 12 + ["merged"] * 10
    assert [task_id for task_id, _ in rows[4:8]] == ["task-16", "task-15", "task-14", "task-17"]
    assert [task_id for task_id, _ in rows[-10:]] == [f"task-{i:02d}" for i in range(13, 3, -1)]  # recent first
    assert len({task_id for task_id, _ in rows}) == 30  # the waiting ones too, though no event named them yet


def test_what_does_not_fit_the_height_is_counted() -> None:
    lines = shown(busy_run(60), T0 + 60)  # 80x24, 42 tasks waiting
    assert len(lines) == 24
    text = "\n".join(lines)
    assert sum(1 for line in lines if " running " in line) == 5  # the queue line and the 4 at work
    assert "task-17  blocked" in text  # problems are never crowded out by waiting tasks
    waiting_rows = sum(1 for line in lines if " pending" in line)
    assert waiting_rows > 0 and f"… {42 - waiting_rows} more waiting" in text
    assert lines[-1] == "… 10 more merged"  # the last group keeps its count line


def test_columns_adapt_to_the_width() -> None:
    snap = busy_run()
    wide, normal, narrow = (shown(snap, T0 + 60, width=w, height=40)[1].split() for w in (160, 80, 60))
    assert wide == ["task", "status", "agent", "try", "elapsed", "activity", "cost"]
    assert normal == ["task", "status", "try", "elapsed", "activity", "cost"]
    assert narrow == ["task", "status", "try", "elapsed", "activity"]
    long_activity = next(line for line in shown(snap, T0 + 60, width=60) if line.startswith("task-00"))
    assert len(long_activity) <= 60 and long_activity.endswith("…")  # the activity is cut, not wrapped
    # a run that costs nothing (subscription agents, fakes) has no cost column at any width
    free = started(["a"])
    running(free, "a", T0)
    assert "cost" not in shown(free, T0 + 1, width=160)[1]


def test_a_finished_run_stops_its_clocks_and_says_how_it_ended() -> None:
    snap = started(["a", "b"])
    running(snap, "a", T0)
    snap.apply(RunFinished(run_id=RUN, ts=T0 + 65, status=RunStatus.INTERRUPTED))
    later = shown(snap, T0 + 4000)
    assert "interrupted" in later[0] and "1m05s" in later[0] and "waiting" not in later[0]
    assert "1m05s" in next(line for line in later if line.startswith("a "))


def test_the_last_frame_after_an_interrupt_is_the_current_state() -> None:
    """Ctrl-C that escapes the session (before its handlers are in place): the frame left on the terminal shows
    the state the run reached, stopped, not the frame of the last refresh with tasks seemingly at work."""
    buffer, now = io.StringIO(), time.time()
    console = Console(file=buffer, width=80, height=24, force_terminal=True, color_system=None)
    dashboard = Dashboard(console)
    with pytest.raises(KeyboardInterrupt), dashboard:
        dashboard(RunStarted(run_id=RUN, ts=now, base="main", base_commit="0" * 40, integration_branch="i", tasks=2,
                             parallel=2, statuses=dict.fromkeys("ab", S.PENDING)))
        for task_id in "ab":
            dashboard(TaskStatusChanged(run_id=RUN, ts=now, task=task_id, status=S.RUNNING, attempt=1))
            dashboard(AttemptStarted(run_id=RUN, ts=now, task=task_id, attempt=1, agent="fake", branch="b",
                                     worktree="w", start_commit="0" * 40))
        dashboard.live.refresh()  # a frame with both at work
        dashboard(TaskStatusChanged(run_id=RUN, ts=now, task="a", status=S.MERGED, attempt=1))
        raise KeyboardInterrupt
    frames = buffer.getvalue().split("\x1b[2K")
    last = ANSI.sub("", frames[-1])
    assert "interrupted" in last.splitlines()[0] and "merged 1/2" in last, last
    assert re.search(r"^a +merged", last, re.M) and re.search(r"^b +running", last, re.M), last
    assert any("running 2" in frame for frame in frames)  # the frame it replaced


def test_a_resumed_session_counts_what_earlier_sessions_did() -> None:
    statuses = {"a": S.MERGED, "b": S.MERGED, "f": S.FAILED, "s": S.RUNNING, "w": S.PENDING}
    snap = started(list(statuses), statuses=statuses, resumed=True, cost_usd=1.25)
    queue = shown(snap, T0 + 1)[0]
    assert "merged 2/5" in queue and "failed 1" in queue and "waiting 1" in queue
    assert "$1.25" in queue  # what earlier sessions spent counts too
    assert "in an earlier session" in "\n".join(shown(snap, T0 + 1))


def test_after_a_crash_and_resume_the_dashboard_counts_the_earlier_merges(
        repo: Path, write_plan: Callable[[str], Path]) -> None:
    go = repo.parent / "go"
    plan = write_plan(plan_text(task("a", "@write a.txt a") + task("b", "@write b.txt b") + task("f", "@exit 3")
                                + task("s", f"@wait-for {go} 60\n@write s.txt s")
                                + task("w", "@write w.txt w", "    depends_on: [s]\n")))
    with live_run(repo, plan) as (proc, run_id, _pgid):
        def first_ones() -> dict[str, str]:
            rows = query(repo, "SELECT task_id, status FROM tasks WHERE run_id = ? AND task_id IN ('a', 'b', 'f')",
                         run_id)
            return {task_id: state for task_id, state in rows}

        wait_for(lambda: first_ones() == {"a": "merged", "b": "merged", "f": "failed"}, "a and b merged, f failed")
        proc.send_signal(signal.SIGKILL)  # a crash: nothing of the session's end is recorded
        proc.wait(timeout=10)
    go.touch()
    heard: list[OrchardEvent] = []
    result = orchard.resume(repo, on_event=heard.append)
    assert result.status is RunStatus.FAILED  # f failed in the first session

    first = Snapshot()
    first.apply(heard[0])  # the resumed session's run.started alone already counts the first session's work
    assert isinstance(heard[0], RunStarted) and heard[0].resumed
    assert "merged 2/5" in shown(first, heard[0].ts)[0] and "failed 1" in shown(first, heard[0].ts)[0]

    snap = Snapshot()
    for event in heard:
        snap.apply(event)
    queue = shown(snap, heard[-1].ts)[0]
    assert "merged 4/5" in queue and "failed 1" in queue, queue  # not "merged 2/5": s and w merged in this one
    assert snap.count(lambda s: s is S.MERGED) == result.summary["merged"] == 4


def test_the_queue_line_says_when_the_run_should_end_while_it_runs() -> None:
    snap = started(["a", "b"])
    eta = datetime.fromtimestamp(T0 + 200, tz=UTC).isoformat().replace("+00:00", "Z")
    snap.apply(QueueChanged(run_id=RUN, ts=T0 + 1, waiting=1, running=1, free=3, paused=0, eta=eta))
    wide = shown(snap, T0 + 20, width=160)[0]
    assert "eta 3m00s" in wide
    narrow = shown(snap, T0 + 20, width=80)[0]
    assert len(narrow) <= 80 and "20s" in narrow  # the elapsed time outlives the estimate on a narrow screen
    snap.apply(RunFinished(run_id=RUN, ts=T0 + 30, status=RunStatus.COMPLETED))
    assert "eta" not in shown(snap, T0 + 40, width=160)[0]


def test_a_row_says_which_machine_of_a_cluster_its_attempt_runs_on() -> None:
    snap = started(["here", "there"])
    running(snap, "here", T0)
    status(snap, "there", S.RUNNING, T0)
    snap.apply(AttemptStarted(run_id=RUN, ts=T0, task="there", attempt=1, agent="claude", branch="b",
                              worktree="w", start_commit="0" * 40, host="10.0.0.7#3f2a1c0d"))
    rows = {line.split()[0]: line for line in shown(snap, T0 + 5, width=160)[1:] if line.split()}
    assert "claude on 10.0.0.7#3f2a1c0d" in rows["there"]
    assert "claude" in rows["here"] and " on " not in rows["here"]  # this machine's attempts say nothing more
