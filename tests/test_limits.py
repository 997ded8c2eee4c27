"""The machine's limits (`limits:` of a plan, `--max-load` / `--min-free-memory` / `--min-free-disk`): while one is
exceeded no new attempt starts, the run says why (`held`), and running attempts go on."""

from __future__ import annotations

import io
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from orchard.core.events import RunHeld, RunStarted
from orchard.core.model import Limits, Outcome
from orchard.core.scheduler import AttemptEnded, HoldChanged, Kick, Sampled, Scheduler, StartAttempt
from orchard.core.serialize import plan_from_dict, plan_to_dict
from orchard.plan import load
from orchard.ui.dashboard import render
from orchard.ui.snapshot import Snapshot
from tests.conftest import query, run_orchard, wait_for
from tests.test_engine_acceptance import plan_text, task
from tests.test_scheduler import make_plan, starts

GIB = 1024**3
PLENTY = Sampled(load_per_core=0.2, free_memory=16 * GIB, free_disk=100 * GIB)


def test_a_limit_exceeded_holds_new_attempts_and_running_ones_go_on() -> None:
    plan = make_plan([{"id": f"t{i}"} for i in range(4)], parallel=2)
    sched = Scheduler(plan, 2, limits=Limits(max_load=1.5, min_free_memory=2 * GIB))
    assert starts(sched.handle(Kick(), 0)) == ["t0", "t1"]
    low = Sampled(load_per_core=1.9, free_memory=GIB, free_disk=100 * GIB)
    actions = sched.handle(low, 1)
    assert [a.reason for a in actions if isinstance(a, HoldChanged)] == [
        "held: load 1.90 per core > 1.5, memory 1.1 GB free < 2.1 GB"]
    assert not [a for a in actions if isinstance(a, StartAttempt)]
    assert starts(sched.handle(AttemptEnded("t0", Outcome.SUCCESS), 2)) == []  # a slot is free; still held
    assert sched.active_count() == 1 and not sched.done  # the running attempt is never stopped
    actions = sched.handle(PLENTY, 3)
    assert [a.reason for a in actions if isinstance(a, HoldChanged)] == [""] and starts(actions) == ["t2"]
    assert not [a for a in sched.handle(PLENTY, 4) if isinstance(a, HoldChanged)]  # said once per change


def test_a_measure_that_is_missing_or_within_the_limit_holds_nothing() -> None:
    limits = Limits(max_load=1.0, min_free_memory=GIB, min_free_disk=5 * GIB)
    assert limits.exceeded(load_per_core=None, free_memory=None, free_disk=None) == ""
    assert limits.exceeded(load_per_core=1.0, free_memory=GIB, free_disk=5 * GIB) == ""
    assert limits.exceeded(load_per_core=0.5, free_memory=GIB, free_disk=4 * GIB) == "held: disk 4.3 GB free < 5.4 GB"
    assert Limits().exceeded(load_per_core=99.0, free_memory=0, free_disk=0) == ""
    assert Limits(max_load=2.0).over(Limits(max_load=1.0, min_free_memory=3)) == Limits(2.0, 3, None)


def test_limits_are_validated_by_field_and_survive_the_snapshot(write_plan: Callable[[str], Path],
                                                                 repo: Path) -> None:
    bad = write_plan("limits: {max_load: -1, min_free_memory: lots, min_free_disk: 1.5, colour: 2}\n"
                     + plan_text(task("t", "go")))
    result = run_orchard("plan", str(bad), cwd=repo)
    assert result.code == 2 and "Traceback" not in result.err
    for field in ("limits.max_load", "limits.min_free_memory", "limits.min_free_disk", "limits.colour"):
        assert field in result.err, (field, result.err)
    good = load(write_plan("limits: {max_load: 1.5, min_free_memory: 2G, min_free_disk: 5GB}\n"
                           + plan_text(task("t", "go"))))
    assert good.limits == Limits(max_load=1.5, min_free_memory=2 * 10**9, min_free_disk=5 * 10**9)
    assert plan_from_dict(plan_to_dict(good)).limits == good.limits


def test_the_dashboard_shows_why_the_run_is_held() -> None:
    snap, now = Snapshot(), time.time()
    snap.apply(RunStarted(run_id="r1", ts=now, base="main", base_commit="0" * 40, integration_branch="i", tasks=2,
                          parallel=2))
    snap.apply(RunHeld(run_id="r1", ts=now, reason="held: memory 1.2 GB free < 2.0 GB"))
    assert "held: memory 1.2 GB free < 2.0 GB" in _shown(snap, now)
    snap.apply(RunHeld(run_id="r1", ts=now, reason=""))
    assert "held" not in _shown(snap, now)


def test_a_run_held_for_memory_starts_nothing_until_resume_lowers_the_limit(
        repo: Path, write_plan: Callable[[str], Path], background: Callable[..., subprocess.Popen[str]]) -> None:
    plan = write_plan("limits: {min_free_memory: 100T}\n"  # more than any machine here has
                      + plan_text(task("a", "@write a.txt a") + task("b", "@write b.txt b", "    depends_on: [a]\n")))
    live = background("run", str(plan))

    def held() -> str | None:
        result = run_orchard("status", "--json", cwd=repo)
        return result.json()["run"]["held"] if result.code == 0 else None

    wait_for(lambda: bool(held()), "the run held")
    assert held() == f"held: memory {_free_memory_shown(held())} free < 100.0 TB"
    assert query(repo, "SELECT COUNT(*) FROM attempts") == [(0,)]  # no attempt started
    live.send_signal(signal.SIGINT)
    assert live.wait(timeout=60) == 130
    assert held() is None  # an ended session holds nothing

    resume = run_orchard("resume", "--min-free-memory", "1K", cwd=repo)
    assert resume.code == 0, resume.out + resume.err
    doc = run_orchard("status", "--json", cwd=repo).json()
    assert {t["id"]: t["status"] for t in doc["tasks"]} == {"a": "merged", "b": "merged"}
    reasons = [row[0] for row in query(repo, "SELECT message FROM events WHERE type = 'run.held'")]
    assert reasons[0].startswith("held: memory") and len(reasons) == 1  # the resume was never held

    bad = run_orchard("resume", "--min-free-memory", "plenty", cwd=repo)
    assert bad.code == 2 and "--min-free-memory" in bad.err and "Traceback" not in bad.err


def _free_memory_shown(reason: str | None) -> str:
    """The free memory a hold reason names ("held: memory 7.9 GB free < …" → "7.9 GB")."""
    assert reason is not None
    return reason.removeprefix("held: memory ").split(" free")[0]


def _shown(snap: Snapshot, now: float) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200).print(render(snap, now + 1))
    return buffer.getvalue()
