"""B2 — engine overhead: 500 tasks (`--quick`: 100) on a small repository, `parallel` 8, through `orchard.run`.

The agent is one tiny process that writes one file (`cp` into `out/`). The baseline, in the same run, is
`benchmarks/baseline_git.sh`: the same agent command plus the bare git work per task (worktree add, commit,
merge-tree + commit-tree + update-ref, worktree remove), one task after another. The baseline runs half its tasks
before orchard and half after, so a machine that gets busier or quieter during the run affects both sides alike.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any

import orchard
from benchmarks.common import (
    BASELINE_SCRIPT,
    Config,
    EventLog,
    Result,
    Stopwatch,
    Target,
    copy_agent_command,
    git,
    merge_backlog,
    merge_queue_busy,
    phases,
    scratch,
    small_repo,
)
from benchmarks.profiling import GitCalls, StackSampler, timed_admin_lock
from orchard.core.model import AgentSpec, Plan, Task

PARALLEL = 8
BASELINE_GIT_CALLS = 8  # per task in baseline_git.sh


def instant_plan(count: int, source: Path) -> Plan:
    agent = AgentSpec("cp", "command", options={"command": copy_agent_command(source)})
    tasks = [Task(id=f"t{i:04d}", prompt=f"write out/t{i:04d}.txt", agent="cp") for i in range(count)]
    return Plan.build(tasks, {"cp": agent}, parallel=PARALLEL, source="<b2>")


def baseline(repo: Path, worktrees: Path, first: int, count: int, source: Path) -> Stopwatch:
    with Stopwatch() as sw:
        subprocess.run(["bash", str(BASELINE_SCRIPT), str(repo), str(worktrees), str(first), str(count),
                        str(source)], check=True)
    return sw


def files_on(repo: Path, ref: str) -> int:
    return len(git(repo, "ls-tree", "-r", "--name-only", ref, "out/").split()) - 1  # minus out/.keep


def run(cfg: Config) -> list[Result]:
    count = 100 if cfg.quick else 500
    with scratch("b2") as tmp:
        source = tmp / "payload.txt"
        source.write_text("one file written by the agent\n")
        base_repo, orch_repo = small_repo(tmp / "baseline"), small_repo(tmp / "orchard")
        half = count // 2
        cfg.say(f"  B2: baseline, first {half} tasks …")
        first = baseline(base_repo, tmp / "baseline-worktrees", 0, half, source)
        cfg.say(f"  B2: orchard, {count} tasks at parallel {PARALLEL} …")
        events = EventLog()
        profile: dict[str, Any] = {}
        with GitCalls() as calls, Stopwatch() as sw, _profiling(cfg.profile, profile):
            result = orchard.run(instant_plan(count, source), repo=orch_repo, parallel=PARALLEL, on_event=events)
        cfg.say(f"  B2: baseline, last {count - half} tasks …")
        second = baseline(base_repo, tmp / "baseline-worktrees", half, count - half, source)
        if result.status != "completed" or files_on(orch_repo, f"orchard/{result.run_id}/integration") != count:
            raise RuntimeError(f"orchard run ended {result.status} (merged: {result.summary.get('merged')})")
        if files_on(base_repo, "bench/integration") != count:
            raise RuntimeError("the baseline script did not merge every task")
    base_wall = first.wall + second.wall
    base_children = first.cpu_children + second.cpu_children
    details: dict[str, Any] = {
        "tasks": count, "parallel": PARALLEL,
        "orchard": sw.summary(count),
        "baseline": {"wall_s": base_wall, "wall_per_task_ms": 1000 * base_wall / count,
                     "cpu_children_per_task_ms": 1000 * base_children / count,
                     "git_calls_per_task": BASELINE_GIT_CALLS},
        "orchard_git_calls_per_task": round(sum(calls.count.values()) / count, 2),
        "orchard_git_ms_per_task": round(1000 * sum(calls.wall.values()) / count, 1),
        "orchard_git_calls": calls.table(count),
        "orchard_git_by_step": calls.steps(count),
        "merge_queue": merge_queue_busy(events.events),
        "merge_backlog": merge_backlog(events.events),
        "phases": phases(events.events),
        **profile,
    }
    notes = [f"baseline: {half} tasks before orchard + {count - half} after"]
    if cfg.quick:
        notes.append(f"--quick: {count} tasks, not 500")
    if cfg.profile:
        notes.append("--profile: stack sampling and lock timing were on; figures are inflated")
    return [Result("B2", f"engine overhead: {count} instant tasks, parallel {PARALLEL} (vs bare git, sequential)",
                   measured=sw.wall, baseline=base_wall, ratio=sw.wall / base_wall, target=Target("<=", 1.0),
                   details=details, notes=notes)]


@contextlib.contextmanager
def _profiling(enabled: bool, into: dict[str, Any]) -> Any:
    """With --profile: sample every thread's stack and time the worktree lock while orchard runs."""
    if not enabled:
        yield
        return
    with timed_admin_lock() as lock, StackSampler() as sampler:
        yield
    into["profile_stacks"] = sampler.top()
    into["admin_lock"] = {"acquired": lock.acquired, "wait_s": round(lock.wait_s, 3), "hold_s": round(lock.hold_s, 3)}
