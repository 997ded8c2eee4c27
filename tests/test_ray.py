"""`--executor ray` on a real local Ray cluster (issue 16): a head with no CPUs and two nodes offering
`agent_slot`s, every address loopback. Each test is a real `orchard run` with command agents."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from orchard.cluster.node import NODE_DIR_ENV
from tests.conftest import PYTHON, git, init_repo, query, run_orchard, run_processes, wait_for
from tests.test_engine_acceptance import plan_text, task
from tests.test_engine_signals import logged

SLOTS_PER_NODE = 2


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def cluster_sockets() -> list[tuple[str, str, str]]:
    """Every inet socket of this process's descendants (the cluster's processes): (process, local, remote)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            for conn in proc.net_connections(kind="inet"):
                remote = conn.raddr.ip if conn.raddr else ""
                found.append((proc.name(), conn.laddr.ip, remote))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A head (no CPUs, no dashboard) and two nodes with agent slots, on 127.0.0.1."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # else Ray swaps 127.0.0.1 for the machine's address
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        env.setenv(NODE_DIR_ENV, str(tmp_path_factory.mktemp("nodes")))
        from ray.cluster_utils import Cluster

        head = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                                             "include_dashboard": False})
        try:
            for _ in range(2):
                add_node(head)
            head.wait_for_nodes()
            yield head
        finally:
            head.shutdown()  # type: ignore[no-untyped-call]


def add_node(head: Any) -> Any:
    return head.add_node(num_cpus=1, resources={"agent_slot": SLOTS_PER_NODE}, node_ip_address="127.0.0.1")


@pytest.fixture
def cluster(ray_cluster: Any) -> str:
    """The cluster's address."""
    return str(ray_cluster.address)


PLAN_TASKS = (task("a", "@barrier all 4\n@write a.txt from a") + task("b", "@barrier all 4\n@write b.txt from b")
              + task("c", "@barrier all 4\n@write c.txt from c") + task("d", "@barrier all 4\n@write d.txt from d")
              + task("e", "@derive a.txt e.txt derived: ", "    depends_on: [a, b]\n    verify: [test, -f, a.txt]\n"))


def integration_tree(repo: Path) -> str:
    run, = query(repo, "SELECT integration_branch FROM runs")
    return git(repo, "rev-parse", f"{run[0]}^{{tree}}").strip()


def test_a_plan_on_the_cluster_merges_what_it_merges_here_with_attempts_on_both_nodes(
        cluster: str, tmp_path: Path) -> None:
    trees = {}
    for executor in ("local", "ray"):
        repo = init_repo(tmp_path / executor, {"README.md": "# test repo\n"})
        plan = tmp_path / f"{executor}.yaml"
        plan.write_text(plan_text(PLAN_TASKS, parallel=4))
        args = ["--executor", "ray", "--ray-address", cluster] if executor == "ray" else []
        result = run_orchard("run", str(plan), *args, cwd=repo, timeout=240)
        assert result.code == 0, result.out + result.err
        statuses = query(repo, "SELECT task_id, status FROM tasks ORDER BY task_id")
        assert statuses == [(t, "merged") for t in "abcde"], statuses
        trees[executor] = integration_tree(repo)
        if executor == "ray":
            places = {Path(w).parts[:-3] for w, in query(repo, "SELECT worktree FROM attempts")}
            assert len(places) == 2, places  # the four at the barrier ran two on each node
            logs = sorted((repo / ".orchard" / "runs").glob("*/logs/a.1.log"))
            assert logs and "[orchard: attempt 1 on fake" in logs[0].read_text()  # the node's log, relayed
    assert trees["local"] == trees["ray"]


def test_the_cluster_stays_on_loopback(cluster: str, tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", {"README.md": "# test repo\n"})
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text(task("one", "@write one.txt 1"), parallel=2))
    assert run_orchard("run", str(plan), "--executor", "ray", "--ray-address", cluster, cwd=repo,
                       timeout=240).code == 0
    deadline = time.monotonic() + 5
    sockets = cluster_sockets()
    while not sockets and time.monotonic() < deadline:
        sockets = cluster_sockets()
    assert sockets  # the cluster's processes are this test's descendants: there is something to look at
    outside = [s for s in sockets if not loopback(s[1]) or (s[2] and not loopback(s[2]))]
    assert not outside, outside


def test_ray_without_an_address_is_a_usage_error(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", {"README.md": "# test repo\n"})
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text(task("one", "@write one.txt 1")))
    result = run_orchard("run", str(plan), "--executor", "ray", cwd=repo,
                         env={"RAY_ADDRESS": ""})
    assert result.code == 2 and "--ray-address" in result.err and "Traceback" not in result.err


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_the_remote_agents_and_the_run_resumes_on_the_cluster(
        cluster: str, tmp_path: Path, presses: int) -> None:
    repo = init_repo(tmp_path / "repo", {"README.md": "# test repo\n"})
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text(task("slow1", "@print working\n@if-attempt 1 @sleep 120\n@write one.txt 1")
                              + task("slow2", "@print working\n@if-attempt 1 @sleep 120\n@write two.txt 2")))
    args = ("--executor", "ray", "--ray-address", cluster)
    proc = subprocess.Popen([PYTHON, "-m", "orchard", "run", str(plan), *args], cwd=repo, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: logged(repo, "slow1", 1, "working") and logged(repo, "slow2", 1, "working"),
                 "both remote agents at work", timeout=120)
        (run_id,), = query(repo, "SELECT id FROM runs")
        assert len(run_processes(run_id)) >= 2  # the agents run, on the nodes, as this test's descendants
        for _ in range(presses):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 130, (out, err)
    wait_for(lambda: not run_processes(run_id), "no agent process left", timeout=20)
    resumed = run_orchard("resume", *args, cwd=repo, timeout=240)
    assert resumed.code == 0, resumed.out + resumed.err
    assert query(repo, "SELECT task_id, status FROM tasks ORDER BY task_id") == [("slow1", "merged"),
                                                                                ("slow2", "merged")]


def raylet_of(head: Any, pid: int) -> Any:
    """The cluster's worker node whose raylet `pid` descends from."""
    ancestors = {p.pid for p in psutil.Process(pid).parents()}
    for node in head.worker_nodes:
        raylets = node.all_processes.get("raylet", [])
        if raylets and raylets[0].process.pid in ancestors:
            return node
    raise AssertionError(f"process {pid} runs on no worker node of the cluster")


def test_a_node_removed_mid_attempt_is_lost_and_the_task_runs_again_on_the_other(
        ray_cluster: Any, tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", {"README.md": "# test repo\n"})
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text(task("long", "@print working\n@if-attempt 1 @sleep 60\n@write long.txt done")))
    proc = subprocess.Popen([PYTHON, "-m", "orchard", "run", str(plan), "--executor", "ray", "--ray-address",
                             str(ray_cluster.address)], cwd=repo, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    run_id = ""
    try:
        wait_for(lambda: logged(repo, "long", 1, "working"), "the remote agent at work", timeout=120)
        (run_id,), = query(repo, "SELECT id FROM runs")
        agents = run_processes(run_id)  # bwrap and the agent inside it
        assert agents
        ray_cluster.remove_node(raylet_of(ray_cluster, agents[0]))
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        add_node(ray_cluster)  # the next tests' two nodes
        for pid in run_processes(run_id) if run_id else ():  # no keeper yet kills what a lost node left running
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
    assert proc.returncode == 0, (out, err)
    attempts = query(repo, "SELECT number, outcome, worktree FROM attempts ORDER BY number")
    assert [(n, o) for n, o, _ in attempts] == [(1, "lost"), (2, "success")], attempts
    assert Path(attempts[0][2]).parts[:-3] != Path(attempts[1][2]).parts[:-3]  # again, on the other node
    assert query(repo, "SELECT status FROM tasks") == [("merged",)]


def test_the_library_runs_on_the_cluster_given_its_address(cluster: str, tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", {"README.md": "# test repo\n"})
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text(task("lib", "@write lib.txt from the library")))
    script = ("import sys, orchard\n"
              "r = orchard.run(sys.argv[1], repo=sys.argv[2], ray_address=sys.argv[3])\n"
              "print(r.status, r.task('lib').status)\n")
    proc = subprocess.run([PYTHON, "-c", script, str(plan), str(repo), cluster], capture_output=True, text=True,
                          timeout=240, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and proc.stdout.split() == ["completed", "merged"], proc.stdout + proc.stderr
    (worktree,), = query(repo, "SELECT worktree FROM attempts")
    assert "orchard-node-" in worktree  # it ran on a node, not here
