"""B10: the same run on a two-node local Ray cluster (loopback only, 2 agent slots a node) and on this machine's
executor, one after the other in one session: tasks of an agent that sleeps 3 s (32; `--quick`: 8), parallel 4.
Figures: each attempt's start latency (the scheduler starting it → its attempt started, with its worktree ready
at the start commit: on the cluster that includes placing it, sending the node the commits it lacks, and the
node's worktree from its pool), the wall time, and the CPU
the driver process spent per attempt (orchard's engine and, on the cluster, Ray's driver: the agents' own CPU is
not the driver's). Target: the remote start latency at most twice the local one."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orchard
from benchmarks.common import Config, EventLog, Result, Target, median, scratch, sleepy_plan, small_repo
from orchard.core.model import Plan

AGENT_S = 3
PARALLEL = 4


def start_latencies(events: EventLog) -> list[float]:
    """Per attempt: from the scheduler starting it (its task `running`: a slot was free) to `attempt.started` (its
    worktree prepared at the start commit, on the node; the agent launching). Waiting for a slot is not in it."""
    out = []
    for started in events.of("attempt.started"):
        running = [e["t"] for e in events.of("task.status", task=started["task"], status="running")
                   if e["t"] <= started["t"]]
        out.append(started["t"] - running[-1])
    return out


def measured(plan: Plan, repo: Path, address: str | None) -> dict[str, float]:
    events = EventLog()
    cpu, wall = time.process_time(), time.perf_counter()
    result = orchard.run(plan, repo=repo, on_event=events, ray_address=address)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if result.status != "completed":
        raise RuntimeError(f"the {'cluster' if address else 'local'} run ended {result.status}")
    latencies = start_latencies(events)
    return {"start_s": median(latencies), "start_max_s": max(latencies), "wall_s": wall,
            "driver_cpu_per_attempt_ms": 1000 * cpu / len(latencies)}


def start_cluster(nodes_dir: Path) -> Any:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray keeps to loopback
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["ORCHARD_NODE_DIR"] = str(nodes_dir)
    from ray.cluster_utils import Cluster

    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                                         "include_dashboard": False})
    for _ in range(2):
        head.add_node(num_cpus=1, resources={"agent_slot": PARALLEL // 2}, node_ip_address="127.0.0.1")
    head.wait_for_nodes()
    return head


def run(cfg: Config) -> list[Result]:
    tasks = 8 if cfg.quick else 32
    plan = sleepy_plan(AGENT_S, tasks=tasks, parallel=PARALLEL, prefix="t", source="<b10>")
    with scratch("b10") as root:
        began = time.perf_counter()
        cfg.say("  B10: starting a head and two nodes on loopback …")
        head = start_cluster(root / "nodes")
        cluster_s = time.perf_counter() - began
        try:
            cfg.say(f"  B10: {tasks} tasks of a {AGENT_S} s agent on the cluster …")
            remote = measured(plan, small_repo(root / "remote"), str(head.address))
        finally:
            head.shutdown()
        cfg.say(f"  B10: the same {tasks} tasks on this machine …")
        local = measured(plan, small_repo(root / "local"), None)
    details = {"tasks": tasks, "cluster_start_s": round(cluster_s, 2),
               **{f"local_{k}": round(v, 3) for k, v in local.items()},
               **{f"remote_{k}": round(v, 3) for k, v in remote.items()}}
    return [Result("B10", f"attempt start on a 2-node Ray cluster vs this machine ({tasks} × {AGENT_S} s agents)",
                   measured=remote["start_s"], baseline=local["start_s"],
                   ratio=remote["start_s"] / local["start_s"] if local["start_s"] else None,
                   target=Target("<=", 2.0, label="≤ 2× local"), details=details)]
