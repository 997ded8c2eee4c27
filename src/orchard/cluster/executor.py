"""`RayExecutor`: attempts' workspace halves on the machines of a Ray cluster, one long-lived `NodeHost` actor per
node that offers `agent_slot`s, the scheduler, journal and merge queue staying with the driver.

Each host actor is pinned to its node (hard node affinity) with every retry and restart of Ray's off: Ray's own
retries would run a lost node's attempt again elsewhere and splice both runs' output into one stream. orchard
counts the slots itself and places an attempt on the live host with the most free ones. Commits travel as git
bundles through Ray's object store: a node is sent what it lacks of the attempt's start (a seed of the base the
first time, then small ones per integration tip), and the result comes back as a bundle of start..end that the
driver has git verify and fetches into the task branch, so the merge queue cannot tell local and remote results
apart.

Only the open attempt's word counts: every message names its attempt's token, and one naming another is the node
failing. A watchdog per attempt waits `watchdog_s` for each message (a quiet attempt beats ten times a wait); past
it the node is taken as lost, frozen or cut off. The driver renews each node's lease as often with the tokens it
still wants there; the node's keeper kills the rest, and everything once the renewals stop.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchard.cluster.keeper import every
from orchard.cluster.node import NodeHost, Outcome
from orchard.core.journal import Verdict
from orchard.core.model import Outcome as AttemptOutcome
from orchard.core.redact import Redactor
from orchard.errors import EnvironmentProblem, GitError, UsageError
from orchard.runtime.context import LiveProcesses, RunContext
from orchard.runtime.executor import Executor, LocalExecutor
from orchard.runtime.process import append_log
from orchard.runtime.workspace import AttemptJob, AttemptSink, WorkspaceResult, verdict
from orchard.vcs import Repo
from orchard.vcs.bundles import fetch_bundle, write_bundle

# What a node may tell the driver's sink: all the sink hears but where the attempt was put, which the driver knows.
SINK_METHODS = frozenset(name for name in vars(AttemptSink) if not name.startswith("_")) - {"placed"}
SLOT = "agent_slot"
NAMESPACE = "orchard"
CLOSE_S = 10.0  # the most the session's end waits for the nodes to kill what still runs
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray keeps 127.0.0.1 as the node's address
WATCHDOG_ENV = "ORCHARD_RAY_WATCHDOG"  # seconds without a word from an attempt's node before it counts as lost
WATCHDOG_S = 30.0


class NodeFault(Exception):
    """A node fell silent past the watchdog, or said what no node of orchard's says: it takes no more attempts."""


@dataclass
class _Node:
    """One node's host actor as the driver tracks it: its slots, the attempts on it, the commits it has."""

    node_id: str
    address: str
    slots: int
    actor: Any
    running: dict[str, str] = field(default_factory=dict)  # attempt (task/number) → its token
    has: set[str] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def free(self) -> int:
        return self.slots - len(self.running)

    @property
    def name(self) -> str:
        return node_name({"NodeManagerAddress": self.address, "NodeID": self.node_id})


class _Relay:
    """The driver's sink, noting whether the attempt was told as started (a lost attempt is then journaled as
    finished, else as never started)."""

    def __init__(self, sink: AttemptSink) -> None:
        self.sink, self.began = sink, False

    def __getattr__(self, method: str) -> Any:
        if method == "started":
            self.began = True
        return getattr(self.sink, method)


class RayExecutor:
    """Runs each attempt's workspace half on a node of the cluster at `address`."""

    def __init__(self, address: str, *, repo: Repo, run_id: str, redactor: Redactor, processes: LiveProcesses,
                 watchdog_s: float = WATCHDOG_S) -> None:
        self.address, self.repo, self.run_id, self.redactor = address, repo, run_id, redactor
        self.processes = processes  # the run's: its interrupt and each task's cancel go on to the nodes
        self.watchdog_s = watchdog_s
        self.nodes: list[_Node] = []
        self.lost: list[_Node] = []  # taken out of service this session; their actors go at its end
        self.placed: dict[str, str] = {}  # task → the node of its last attempt
        self.renewer: asyncio.Task[None] | None = None
        self.round = 0  # the number of the next renewal of the nodes' leases (`NodeHost.renew`)

    def connect(self) -> None:
        """Join the cluster and start a host actor on every live node that offers agent slots."""
        ray, offered = join(self.address)
        host = ray.remote(NodeHost)
        for info in offered:
            actor = host.options(scheduling_strategy=pinned(info), max_restarts=0, max_task_retries=0, num_cpus=0,
                                 max_concurrency=1000).remote(self.run_id, lease_s=self.watchdog_s)
            self.nodes.append(_Node(info["NodeID"], str(info.get("NodeManagerAddress", "")),
                                    int(info["Resources"][SLOT]), actor))

    def slots(self) -> int:
        return sum(n.slots for n in self.nodes)

    async def run(self, job: AttemptJob, sink: AttemptSink) -> WorkspaceResult:
        if not self.nodes:
            return WorkspaceResult(verdict(AttemptOutcome.LOST, "no node of the cluster is left"), started=False)
        if self.renewer is None:
            self.renewer = asyncio.ensure_future(self._renew())
        node = self._place(job.task.id)
        node.running[job.key] = job.token
        sink.placed(node.name)
        relay = _Relay(sink)
        errors = import_ray(self.address).exceptions
        try:
            await self._send(node, [job.tip, *([job.theirs] if job.theirs else [])])
            return await self._follow(node, job, relay)
        except (errors.RayError, NodeFault) as exc:
            if isinstance(exc, errors.RayTaskError):  # orchard's own code failed on the node: a bug, not a loss
                raise
            self._lose(node)
            why = str(exc) if isinstance(exc, NodeFault) else f"it was lost mid-attempt ({type(exc).__name__})"
            return WorkspaceResult(verdict(AttemptOutcome.LOST, f"node {node.name}: {why}"), started=relay.began)
        finally:
            node.running.pop(job.key, None)

    async def _renew(self) -> None:
        """Ten times a watchdog's wait, every node's lease: the tokens of the attempts the driver still follows
        there (the keeper kills the others' processes)."""
        while True:
            for node in self.nodes:
                with contextlib.suppress(Exception):  # a node that cannot be told is the watchdog's to find
                    node.actor.renew.remote(list(node.running.values()), self.round)
            self.round += 1
            await asyncio.sleep(every(self.watchdog_s))

    def _lose(self, node: _Node) -> None:
        """A node that went away takes no more attempts (its host actor is not restarted: a new session's is)."""
        if node in self.nodes:
            self.nodes.remove(node)
            self.lost.append(node)

    def _place(self, task_id: str) -> _Node:
        """The live node with the most free slots, the one of the task's last attempt first among equals (its
        parked worktree is there)."""
        previous = self.placed.get(task_id)
        node = max(self.nodes, key=lambda n: (n.free, n.node_id == previous))
        self.placed[task_id] = node.node_id
        return node

    async def _send(self, node: _Node, commits: list[str]) -> None:
        """Make sure `node` has `commits`: a bundle of what it lacks of each (beyond what it was sent before)."""
        async with node.lock:
            for commit in commits:
                if commit in node.has:
                    continue
                data = await asyncio.to_thread(self._bundle, commit, sorted(node.has))
                if data is not None:
                    try:  # a seed may take a while; a node that takes far longer is gone
                        await asyncio.wait_for(node.actor.receive.remote(data, commit), 4 * self.watchdog_s)
                    except TimeoutError:
                        raise NodeFault(f"it took no commit {commit} within {4 * self.watchdog_s:g} s") from None
                node.has.add(commit)

    def _bundle(self, commit: str, known: list[str]) -> bytes | None:
        with tempfile.TemporaryDirectory(prefix="orchard-bundle-") as scratch:
            path = Path(scratch) / "out.bundle"
            return path.read_bytes() if write_bundle(self.repo, path, commit, known=known) else None

    async def _follow(self, node: _Node, job: AttemptJob, sink: AttemptSink) -> WorkspaceResult:
        """Relay what the node tells of the attempt to the sink and its log to the driver's, then take its
        result commit into the task branch."""
        outcome: Outcome | None = None
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end inside a character
        stopper = asyncio.ensure_future(self._stop_when_asked(node, job.task.id))
        messages = node.actor.run.remote(job, self.round)  # the renewals so far could not name it
        try:
            while outcome is None:
                message = await self._next(node, messages)
                if message is None:
                    break
                token, kind, value = message
                if token != job.token:  # only the open attempt's word counts
                    raise NodeFault(f"it sent word of attempt {token!r} while {job.key} was open there")
                if kind == "log":
                    await asyncio.to_thread(append_log, job.log_path, self.redactor(text.decode(value)))
                elif kind == "calls":
                    self._tell(node, sink, value)
                elif kind == "result":
                    outcome = value
        finally:
            stopper.cancel()
        if outcome is None:
            raise NodeFault(f"it ended attempt {job.key} without a result")
        result = await asyncio.to_thread(self._take, job, outcome)
        if result.verdict.end_commit:  # the node made it: integration tips that merge it need not send it back
            node.has.add(result.verdict.end_commit)
        return result

    async def _next(self, node: _Node, messages: Any) -> tuple[str, str, Any] | None:
        """The attempt's next message from `node` (None: there is none), within the watchdog's wait."""
        async def receive() -> tuple[str, str, Any] | None:
            try:
                ref = await messages.__anext__()
            except StopAsyncIteration:
                return None
            message: tuple[str, str, Any] = await ref
            return message

        try:
            return await asyncio.wait_for(receive(), self.watchdog_s)
        except TimeoutError:
            raise NodeFault(f"no word from it for {self.watchdog_s:g} s (frozen, or cut off)") from None

    def _tell(self, node: _Node, sink: AttemptSink, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> None:
        """The sink calls a node made, redacted again here; a call no sink has is the node failing."""
        for method, args, kwargs in calls:
            if method not in SINK_METHODS:  # what a node says is data, never a way into the driver
                raise NodeFault(f"it sent {method!r}, which no sink has")
            getattr(sink, method)(*(self._safe(a) for a in args), **{k: self._safe(v) for k, v in kwargs.items()})

    async def _stop_when_asked(self, node: _Node, task_id: str) -> None:
        """The run's interrupt stops every attempt on the node as it stops local ones; a task's cancel, its own."""
        await self.processes.stop_for(task_id).wait()
        with contextlib.suppress(Exception):  # a node that cannot be told is gone: the session's end sees to it
            if self.processes.stopping:
                await node.actor.interrupt.remote(False)
            else:
                await node.actor.stop.remote(task_id)

    def _safe(self, value: Any) -> Any:
        return self.redactor(value) if isinstance(value, str) else value

    def _take(self, job: AttemptJob, outcome: Outcome) -> WorkspaceResult:
        """The node's result, its commit fetched into the task branch (a bundle git refuses fails the attempt)."""
        result, end = outcome.result, outcome.result.verdict.end_commit
        if end is None or not result.started or end in (job.tip, job.theirs):
            return result  # nothing to take: no result, or one the driver has
        if outcome.bundle is None:
            return WorkspaceResult(Verdict(AttemptOutcome.REJECTED, f"the node sent no bundle of its result {end}",
                                           None, None), report=result.report)
        with tempfile.TemporaryDirectory(prefix="orchard-bundle-") as scratch:
            path = Path(scratch) / "in.bundle"
            path.write_bytes(outcome.bundle)
            try:
                fetch_bundle(self.repo, path, tip=end, into="refs/heads/" + job.branch)
            except GitError as exc:
                verdict = Verdict(AttemptOutcome.REJECTED, f"the node's result could not be taken: {exc}", None,
                                  None)
                return WorkspaceResult(verdict, report=result.report)
        return result

    def close(self) -> None:
        """The session ends: what still runs on a node is killed (a second Ctrl-C's end, or a crash's), then its
        host actors go."""
        ray = import_ray(self.address)
        if self.renewer is not None:
            self.renewer.cancel()
        with contextlib.suppress(Exception):  # a node already gone has nothing left to kill
            ray.get([node.actor.end.remote() for node in self.nodes], timeout=CLOSE_S)
        for node in self.nodes + self.lost:  # a lost node's actor, if it still lives: its keeper then cleans up
            with contextlib.suppress(Exception):
                ray.kill(node.actor, no_restart=True)
        self.nodes.clear()
        self.lost.clear()
        ray.shutdown()


def join(address: str) -> tuple[Any, list[dict[str, Any]]]:
    """Ray, joined to the cluster at `address`, and its live nodes that offer agent slots (Ray's node records)."""
    ray = import_ray(address)
    if not ray.is_initialized():
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR")
        except ConnectionError as exc:
            raise EnvironmentProblem(f"cannot join the Ray cluster at {address}: {exc}") from None
    offered = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(SLOT, 0) >= 1]
    if not offered:
        raise EnvironmentProblem(f"the Ray cluster at {address} has no live node offering {SLOT!r}: start "
                                 f"its nodes with ray start --resources='{{\"{SLOT}\": N}}'")
    return ray, offered


def pinned(info: dict[str, Any]) -> Any:
    """Ray's placement on the node of `info` and nowhere else: if it goes, what was placed there fails."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=info["NodeID"], soft=False)


def node_name(info: dict[str, Any]) -> str:
    """How the store and the user know a node: its address and the start of Ray's id for it."""
    return f"{info.get('NodeManagerAddress', '')}#{str(info['NodeID'])[:8]}"


def import_ray(address: str) -> Any:
    """Ray, imported for a cluster at `address`. On a cluster of loopback addresses (one machine) Ray is told to
    stay on loopback: it would otherwise replace 127.0.0.1 with the machine's own address, and its traffic would
    leave the loopback range."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", "::1") or host.startswith("127."):
        os.environ.setdefault(LOOPBACK_ENV, "0")  # read as Ray is imported
    try:
        import ray
    except ImportError:
        raise EnvironmentProblem("--executor ray needs Ray: pip install 'orchard[ray]'") from None
    return ray


def watchdog_seconds() -> float:
    """The watchdog's wait: `ORCHARD_RAY_WATCHDOG` seconds if set (at least 2: a beat comes each second)."""
    raw = os.environ.get(WATCHDOG_ENV, "").strip()
    try:
        return max(2.0, float(raw)) if raw else WATCHDOG_S
    except ValueError:
        raise EnvironmentProblem(f"{WATCHDOG_ENV}={raw!r}: a number of seconds, such as 30") from None


def planned_executor(address: str | None = None) -> Callable[[RunContext], Executor]:
    """The executor the run's plan names (`executor: ray` or local): a Ray cluster's at `address`, else at
    $RAY_ADDRESS (a plan is shared; the address of its cluster is each user's)."""
    def make(ctx: RunContext) -> Executor:
        if ctx.plan.executor != "ray":
            return LocalExecutor(ctx.host)
        where = address or os.environ.get("RAY_ADDRESS", "")
        if not where:
            raise UsageError(f"{ctx.plan.source}: executor: ray needs the cluster's address: --ray-address "
                             "HOST:PORT or $RAY_ADDRESS")
        return ray_executor(where)(ctx)

    return make


def ray_executor(address: str) -> Callable[[RunContext], RayExecutor]:
    """What a session makes its executor with (`Options.executor`): a `RayExecutor` joined to the cluster."""
    def make(ctx: RunContext) -> RayExecutor:
        executor = RayExecutor(address, repo=ctx.git, run_id=ctx.run_id, redactor=ctx.redactor,
                               processes=ctx.processes, watchdog_s=watchdog_seconds())
        executor.connect()
        return executor

    return make
