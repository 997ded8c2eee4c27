"""B1's other policies, simulated on the same DAGs with the same durations as orchard's scheduler.

* `barrier_schedule` — the group barrier of tools that run a plan in waves (claudio's ultraplan groups, a workstream
  guide's iterations, gadugi's parallel groups): wave k holds the tasks whose longest dependency chain from a root has
  k edges (`orchard.core.graph.waves`), a wave starts only when the previous one has entirely finished, and inside a
  wave a pool of `parallel` workers takes the tasks in plan order. An event simulation of its own, since it is a
  baseline and not orchard's code.
* `noisy_plan` — the same plan with every estimate off by a log-normal factor, for orchard's scheduler to rank by
  while the simulation runs the true durations (estimates learned from history are never exact).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from orchard.core.graph import waves
from orchard.core.model import Plan

NOISE_SIGMA = 0.5  # estimate = true duration × exp(N(0, σ)): within ×/÷ 1.65 two times in three


@dataclass(frozen=True)
class BarrierRun:
    """One simulated group-barrier run: its makespan and when each task started and finished."""

    makespan_s: float
    starts: Mapping[str, float]
    finishes: Mapping[str, float]


def barrier_schedule(plan: Plan, parallel: int, duration: Callable[[str], float]) -> BarrierRun:
    """Run `plan` wave by wave at `parallel`, each task taking `duration(task_id)`."""
    clock = 0.0
    starts: dict[str, float] = {}
    finishes: dict[str, float] = {}
    for wave in waves(plan):  # each wave's ids come in plan order
        clock = _run_wave(wave, clock, max(1, parallel), duration, starts, finishes)
    return BarrierRun(clock, starts, finishes)


def _run_wave(wave: list[str], begin: float, parallel: int, duration: Callable[[str], float],
              starts: dict[str, float], finishes: dict[str, float]) -> float:
    """List-schedule one wave from `begin`: the next task in order goes to the worker free first (what a pool
    draining a queue does, since every task of the wave is ready at its start). Returns when the last one ends."""
    free_at = [begin] * min(parallel, len(wave))  # the workers' free times, a min-heap (all equal: already one)
    end = begin
    for task_id in wave:
        start = heapq.heappop(free_at)
        finish = start + max(0.0, duration(task_id))
        starts[task_id], finishes[task_id] = start, finish
        heapq.heappush(free_at, finish)
        end = max(end, finish)
    return end


def check_barrier(plan: Plan, parallel: int, run: BarrierRun) -> str | None:
    """What is wrong with a barrier run (a dependency started early, too many at once), or None."""
    for t in plan.tasks:
        early = [d for d in t.depends_on if run.finishes[d] > run.starts[t.id]]
        if early:
            return f"{t.id} started before {early[0]} finished"
    moments = sorted([(s, 1) for s in run.starts.values()] + [(f, -1) for f in run.finishes.values()])
    running = 0
    for _, step in moments:  # at equal times the -1 (an end) sorts first: a slot freed and retaken is not overlap
        running += step
        if running > parallel:
            return f"more than {parallel} tasks at once"
    return None


def noisy_plan(plan: Plan, seed: int, sigma: float = NOISE_SIGMA) -> Plan:
    """`plan` with each estimate multiplied by exp(N(0, sigma)); the factors are drawn in task-id order from their
    own seeded generator, so a task's error does not depend on the shuffled plan order or on the DAG's draws."""
    rng = random.Random(f"b1-noise-{seed}")
    factor = {tid: math.exp(rng.gauss(0.0, sigma)) for tid in sorted(t.id for t in plan.tasks)}
    tasks = [dataclasses.replace(t, estimate_s=t.estimate_s * factor[t.id], estimated="history")
             for t in plan.tasks]
    return Plan.build(tasks, plan.agents)
