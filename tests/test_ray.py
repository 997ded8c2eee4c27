"""`--executor ray` on a real local Ray cluster (issue 16): a head with no CPUs and two nodes offering
`agent_slot`s, every address loopback. Each test is a real `orchard run` with command agents."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from orchard.cluster.node import NODE_DIR_ENV
from tests.conftest import PYTHON, git, init_repo, merged_tasks, query, run_orchard, run_processes, wait_for
from tests.test_engine_acceptance import plan_text, task
from tests.test_engine_signals import logged, noted, task_status

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
    plan.write_text(plan_text(task("one", "@write one.txt 1"), parallel=6))
    assert run_orchard("run", str(plan), "--executor", "ray", "--ray-address", cluster, cwd=repo,
                       timeout=240).code == 0
    assert noted(repo, f"the executor has {2 * SLOTS_PER_NODE} agent slot(s)")  # the run is as wide as the cluster
    deadline = time.monotonic() + 5
    sockets = cluster_sockets()
    while not sockets and time.monotonic() < deadline:
        sockets = cluster_sockets()
    assert sockets  # the cluster's processes are this test's descendants: there is something to look at
    outside = [s for s in sockets if not loopback(s[1]) or (s[2] and not loopback(s[2]))]
    assert not outside, outside


def test_a_plan_saying_executor_ray_runs_on_the_cluster_at_ray_address(cluster: str, tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", {"README.md": "# test repo\n"})
    plan = tmp_path / "plan.yaml"
    plan.write_text("executor: ray\n" + plan_text(task("one", "@write one.txt 1")))
    missing = run_orchard("run", str(plan), cwd=repo, env={"RAY_ADDRESS": ""})
    assert missing.code == 2 and "executor: ray needs the cluster's address" in missing.err, missing.err
    assert str(plan) in missing.err and "Traceback" not in missing.err
    here = run_orchard("run", str(plan), "--executor", "local", cwd=repo, timeout=120)  # the flag wins
    assert here.code == 0, here.out + here.err
    there = run_orchard("run", str(plan), cwd=repo, env={"RAY_ADDRESS": cluster}, timeout=240)
    assert there.code == 0, there.out + there.err
    hosts = query(repo, "SELECT a.host FROM attempts a JOIN runs r ON a.run_id = r.id "
                        "WHERE a.outcome = 'success' ORDER BY r.started_at")
    assert [h == "local" for h, in hosts] == [True, False], hosts


def test_doctor_checks_every_node_of_the_cluster(cluster: str, tmp_path: Path) -> None:
    from orchard.cluster.doctor import versions

    repo = init_repo(tmp_path / "repo", {"README.md": "# test repo\n"})
    found = run_orchard("doctor", "--executor", "ray", "--ray-address", cluster, "--json", cwd=repo, timeout=180)
    assert found.code == 0, found.out + found.err
    nodes = found.json()["nodes"]
    assert len(nodes) == 2 and len({n["node"] for n in nodes}) == 2, nodes
    here = versions()
    for node in nodes:
        assert node["ok"] and node["problems"] == [], node
        assert {key: node[key] for key in here} == here  # the node runs this very code
        assert node["git"]["ok"] and node["disk_free"] > 0 and node["node_dir"]
        assert {a["kind"] for a in node["agents"]} >= {"claude", "codex"}  # every known agent, without a plan
    text = run_orchard("doctor", "--executor", "ray", "--ray-address", cluster, cwd=repo, timeout=180)
    assert text.code == 0 and all(f"node {n['node']}" in text.out for n in nodes), text.out


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


def alive(pid: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    return False


def node_dirs(run_id: str) -> list[Path]:
    """The directories hosts of the run have on this machine's nodes."""
    return sorted(Path(os.environ[NODE_DIR_ENV]).glob(f"orchard-node-*-{run_id}"))


def slow_task(name: str) -> str:
    return task(name, f"@print working\n@if-attempt 1 @sleep 120\n@write {name}.txt done")


def start_run(repo: Path, plan: Path, address: str, *, watchdog: float | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, **({"ORCHARD_RAY_WATCHDOG": str(watchdog)} if watchdog else {})}
    return subprocess.Popen([PYTHON, "-m", "orchard", "run", str(plan), "--executor", "ray", "--ray-address",
                             address], cwd=repo, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)


def kill_leftovers(run_id: str) -> None:
    """After a failed test only: what it left running goes."""
    for pid in run_processes(run_id) if run_id else ():
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()


def test_a_node_removed_mid_attempt_is_lost_its_agents_killed_and_the_task_runs_again_on_the_other(
        ray_cluster: Any, tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", {"README.md": "# test repo\n"})
    plan = tmp_path / "plan.yaml"
    # unconfined, with a helper of its own: no bwrap --die-with-parent ends them with the node's host actor
    plan.write_text("sandbox: none\n" + plan_text(task("long", "@if-attempt 1 @daemon 120\n@print working\n"
                                                             "@if-attempt 1 @sleep 120\n@write long.txt done")))
    proc = start_run(repo, plan, str(ray_cluster.address))
    run_id = ""
    try:
        wait_for(lambda: logged(repo, "long", 1, "working") or proc.poll() is not None, "the remote agent at work",
                 timeout=120)
        assert proc.poll() is None, proc.communicate()
        (run_id,), = query(repo, "SELECT id FROM runs")
        agents = run_processes(run_id)  # the agent and its helper
        assert len(agents) >= 2 and node_dirs(run_id)
        ray_cluster.remove_node(raylet_of(ray_cluster, agents[0]))
        # the node's keeper outlives its host actor: it kills the agents and removes the node's directory
        wait_for(lambda: not any(alive(pid) for pid in agents), "the lost node's agents killed", timeout=15)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        add_node(ray_cluster)  # the next tests' two nodes
        kill_leftovers(run_id)
    assert proc.returncode == 0, (out, err)
    attempts = query(repo, "SELECT number, outcome, worktree, host FROM attempts ORDER BY number")
    assert [(n, o) for n, o, _, _ in attempts] == [(1, "lost"), (2, "success")], attempts
    assert Path(attempts[0][2]).parts[:-3] != Path(attempts[1][2]).parts[:-3]  # again, on the other node
    assert attempts[0][3] != attempts[1][3] and all(h.startswith("127.0.0.1#") for *_, h in attempts)
    assert query(repo, "SELECT status FROM tasks") == [("merged",)]
    wait_for(lambda: not node_dirs(run_id), "no node directory of the run left", timeout=15)


def node_processes(head: Any, pid: int) -> list[psutil.Process]:
    """Every process of the node `pid` runs on: its raylet, the raylet's descendants, and the keepers of host
    actors among them (they are nobody's children)."""
    raylet = psutil.Process(raylet_of(head, pid).all_processes["raylet"][0].process.pid)
    tree = [raylet, *raylet.children(recursive=True)]
    owners = {str(p.pid) for p in tree}
    keepers = []
    for proc in psutil.process_iter(["cmdline"]):
        line = proc.info["cmdline"] or []
        if "orchard.cluster.keeper" in line and line[line.index("--owner") + 1] in owners:
            keepers.append(proc)
    assert keepers, "the node's host actor has a keeper"
    return tree + keepers


def test_a_frozen_node_is_caught_by_the_watchdog_and_what_it_ran_is_killed_when_it_wakes(
        ray_cluster: Any, tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", {"README.md": "# test repo\n"})
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text(slow_task("long")))
    proc = start_run(repo, plan, str(ray_cluster.address), watchdog=4)
    run_id, frozen = "", []
    try:
        wait_for(lambda: logged(repo, "long", 1, "working"), "the remote agent at work", timeout=120)
        (run_id,), = query(repo, "SELECT id FROM runs")
        agents = run_processes(run_id)
        frozen = node_processes(ray_cluster, agents[0])
        for p in frozen:  # the whole machine stops, as a hung VM or a paused container would
            p.suspend()
        out, err = proc.communicate(timeout=120)
        assert all(alive(pid) for pid in agents)  # nothing on the frozen node could act meanwhile
        for p in frozen:
            p.resume()
        # woken, its keeper finds the driver's lease long lapsed and kills what the driver gave up
        wait_for(lambda: not any(alive(pid) for pid in agents), "the woken node's agents killed", timeout=15)
    finally:
        for p in frozen:
            with contextlib.suppress(psutil.Error):
                p.resume()
        proc.kill()
        if frozen:
            ray_cluster.remove_node(raylet_of_pid(ray_cluster, frozen[0].pid))
            add_node(ray_cluster)
        kill_leftovers(run_id)
    assert proc.returncode == 0, (out, err)
    attempts = query(repo, "SELECT number, outcome, detail, host FROM attempts ORDER BY number")
    assert [(n, o) for n, o, _, _ in attempts] == [(1, "lost"), (2, "success")], attempts
    assert "no word from it for 4 s" in attempts[0][2] and attempts[0][3] != attempts[1][3]
    assert query(repo, "SELECT status FROM tasks") == [("merged",)]


def raylet_of_pid(head: Any, raylet_pid: int) -> Any:
    return next(n for n in head.worker_nodes if n.all_processes["raylet"][0].process.pid == raylet_pid)


def test_a_killed_driver_resumes_on_the_cluster_with_nothing_merged_twice(cluster: str, tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", {"README.md": "# test repo\n"})
    plan = tmp_path / "plan.yaml"
    slow = task("slow", "@if-attempt 1 @daemon 120\n@print working\n@if-attempt 1 @sleep 120\n@write slow.txt done")
    plan.write_text("sandbox: none\n"  # no bwrap --die-with-parent: what ends the agent and its helper is the keeper
                    + plan_text(task("quick", "@write quick.txt 1") + slow
                                + task("after", "@derive quick.txt after.txt after: ",
                                       "    depends_on: [quick, slow]\n")))
    proc = start_run(repo, plan, cluster, watchdog=5)
    run_id = ""
    try:
        wait_for(lambda: logged(repo, "slow", 1, "working") and task_status(repo, "quick") == "merged",
                 "quick merged and slow at work on the cluster", timeout=120)
        (run_id,), = query(repo, "SELECT id FROM runs")
        agents = run_processes(run_id)
        assert len(agents) >= 2  # the agent and its helper
        proc.kill()  # SIGKILL: the driver says nothing to anyone
        proc.communicate(timeout=30)
        # its nodes' keepers kill the agents (their host actors die with their owner, or the lease lapses)
        wait_for(lambda: not any(alive(pid) for pid in agents), "the dead driver's agents killed", timeout=30)
        resumed = run_orchard("resume", "--executor", "ray", "--ray-address", cluster, cwd=repo, timeout=240)
    finally:
        proc.kill()
        kill_leftovers(run_id)
    assert resumed.code == 0, resumed.out + resumed.err
    assert query(repo, "SELECT task_id, status FROM tasks ORDER BY task_id") == [
        ("after", "merged"), ("quick", "merged"), ("slow", "merged")]
    attempts = query(repo, "SELECT task_id, number, outcome FROM attempts ORDER BY task_id, number")
    assert attempts == [("after", 1, "success"), ("quick", 1, "success"), ("slow", 1, "interrupted"),
                        ("slow", 2, "success")], attempts
    tip = git(repo, "rev-parse", f"orchard/{run_id}/integration").strip()
    assert sorted(t for _, t in merged_tasks(repo, tip)) == ["after", "quick", "slow"]  # each merged once
    assert git(repo, "show", f"{tip}:after.txt") == "after:1"  # it started from what its parents merged
    assert not node_dirs(run_id)


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
