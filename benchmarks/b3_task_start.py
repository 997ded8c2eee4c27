"""B3 — task start on a large repository (50,000 files, about 200 MB; `--quick`: 5,000 files, about 20 MB).

orchard runs a chain of tasks at `parallel` 1 on the cached large repository (the fake agent writes one file); from
its events, each task's "ready → agent started" time is `attempt.started` minus the `task.status` `queued` event
(the chain makes every task ready the moment its predecessor merged, with nothing else going on). The baseline in
the same run is a bare `git worktree add --detach` of the same commit.

orchard keeps finished worktrees in a pool and resets one to the new start commit instead of checking out the
repository again; the pool outlives a run. The figure is the steady state: the measured chain runs on a repository
orchard has run on before (one earlier one-task run, whose start — a full checkout, since the pool is empty on a
repository's first run — is reported as the cold start).

Conditions are kept alike on both sides: a warm-up worktree is created and removed first (the pack is in the page
cache for everyone), and the baseline runs once before and once after orchard.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from typing import Any

import orchard
from benchmarks import large_repo
from benchmarks.common import Config, EventLog, Result, Target, fake_agent_spec, median
from benchmarks.profiling import GitCalls
from orchard.core.model import AgentSpec, Plan, Task

TASKS = 2  # orchard tasks in the chain (--quick: 3)
SIDE_REPS = 1  # baseline worktree adds before orchard and again after (--quick: 2)


def timed_worktree_add(repo: large_repo.LargeRepo, name: str) -> float:
    """`git worktree add --detach` of the base commit, timed; the worktree is removed afterwards (untimed)."""
    path = large_repo.baseline_worktrees(repo) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    subprocess.run(["git", "-C", str(repo.root), "worktree", "add", "--quiet", "--detach", str(path), repo.base],
                   check=True)
    elapsed = time.perf_counter() - t
    subprocess.run(["git", "-C", str(repo.root), "worktree", "remove", "--force", str(path)], check=True)
    return elapsed


def chain_plan(tasks: int, prefix: str = "start") -> Plan:
    spec = fake_agent_spec()
    agent = AgentSpec(spec["name"], spec["type"], options=spec["options"])
    chain = [Task(id=f"{prefix}{i}", prompt=f"@write bench/b3/{prefix}{i}.txt started\n", agent=agent.name,
                  depends_on=(f"{prefix}{i - 1}",) if i else ()) for i in range(tasks)]
    return Plan.build(chain, {agent.name: agent}, parallel=1, source="<b3>")


def start_latencies(events: EventLog) -> list[dict[str, Any]]:
    out = []
    for started in events.of("attempt.started"):
        task = started["task"]
        queued = events.of("task.status", task=task, status="queued")[0]["t"]
        running = events.of("task.status", task=task, status="running")[0]["t"]
        out.append({"task": task, "ready_to_started_s": started["t"] - queued,
                    "ready_to_running_s": running - queued, "running_to_started_s": started["t"] - running})
    return out


def run(cfg: Config) -> list[Result]:
    files, size = (5_000, 20_000_000) if cfg.quick else (50_000, 200_000_000)
    repo = large_repo.ensure(cfg.cache, files, size, cfg.say)
    tasks, side = (3, 2) if cfg.quick else (TASKS, SIDE_REPS)
    try:
        cfg.say(f"  B3: warm-up and baseline worktree add on {files:,} files …")
        timed_worktree_add(repo, "warm-up")
        baseline = [timed_worktree_add(repo, f"before-{i}") for i in range(side)]
        cfg.say("  B3: orchard's first run on the repository (one task; its start checks everything out) …")
        first = EventLog()
        if orchard.run(chain_plan(1, "first"), repo=repo.root, parallel=1, on_event=first).status != "completed":
            raise RuntimeError("orchard's first run did not complete")
        cold = start_latencies(first)[0]["ready_to_started_s"]
        cfg.say(f"  B3: orchard, a chain of {tasks} tasks at parallel 1 …")
        events = EventLog()
        with GitCalls() as calls:
            result = orchard.run(chain_plan(tasks), repo=repo.root, parallel=1, on_event=events)
        if result.status != "completed":
            raise RuntimeError(f"orchard run ended {result.status}")
        cfg.say("  B3: baseline worktree add again …")
        baseline += [timed_worktree_add(repo, f"after-{i}") for i in range(side)]
    finally:
        large_repo.reset(repo)
    starts = start_latencies(events)
    total_start = sum(s["ready_to_started_s"] for s in starts)
    resets = calls.wall.get("checkout", 0.0)  # the pooled worktree's reset to the start commit, inside those starts
    measured = median([s["ready_to_started_s"] for s in starts])
    base = median(baseline)
    notes = [f"measured: median over the chain's {tasks} tasks, on a repository orchard had run on before; baseline: "
             f"median of {side} run(s) before orchard and {side} after",
             f"cold start (orchard's first task on the repository, a full checkout): {cold:.2f} s, "
             f"{cold / median(baseline):.2f} × baseline"]
    if cfg.quick:
        notes.append(f"--quick: {files:,} files / ~{size / 1e6:.0f} MB, not 50,000 / 200 MB")
    details = {"files": repo.files, "bytes": repo.bytes, "orchard_tasks": starts, "baseline_worktree_add_s": baseline,
               "cold_start_s": cold,
               "orchard_git_calls": calls.table(tasks), "orchard_git_by_step": calls.steps(tasks),
               "orchard_start_beyond_the_reset_s": round((total_start - resets) / len(starts), 4),
               "reset_share_of_start": round(resets / max(1e-9, total_start), 3),
               "spread": {"baseline_min_s": min(baseline), "baseline_max_s": max(baseline),
                          "orchard_stdev_s": statistics.pstdev([s["ready_to_started_s"] for s in starts])}}
    return [Result("B3", f"task start on a large repo ({files:,} files): ready → agent started (vs git worktree add)",
                   measured=measured, baseline=base, ratio=measured / base, target=Target("<=", 0.10),
                   details=details, notes=notes)]
