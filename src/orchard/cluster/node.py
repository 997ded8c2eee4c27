"""One machine of a cluster as the host of attempts (`NodeHost`): orchard's repository there, seeded and fed with
bundles by the driver, its own worktree pool, and `runtime.workspace.run_workspace`, the very function the local
executor runs, run with a sink that batches what it is told into messages for the driver.

The driver's repository is never touched from here: commits arrive as bundles (`receive`) and a result leaves as
one (`run`'s last message). Every message carries its attempt's token, and a quiet attempt still beats ten times
within the driver's watchdog's wait, so the watchdog can tell a frozen node from a busy one. Lines are redacted
with this machine's secrets before they leave it; the driver redacts again with its own. A keeper
(`cluster.keeper`) kills what runs here once the driver stops wanting it. The class is plain Python;
`cluster.executor` makes it a Ray actor on each node.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchard.cluster.keeper import LEASE, LEDGER, LedgerProcesses, every, reap, start_keeper, write_lease
from orchard.core.redact import Redactor
from orchard.errors import GitError
from orchard.runtime.context import Host
from orchard.runtime.layout import Layout
from orchard.runtime.pool import WorktreePool
from orchard.runtime.workspace import AttemptJob, WorkspaceResult, run_workspace
from orchard.vcs import init_repository
from orchard.vcs.bundles import fetch_bundle, write_bundle
from orchard.vcs.private import open_own_repository

BATCH_S = 0.5  # lines and activity go to the driver this often (a step of the attempt at once, and at the end)
BATCHED = frozenset({"activity", "output"})
LOG_CHUNK = 256 * 1024  # the most of the attempt's log one message carries
NODE_DIR_ENV = "ORCHARD_NODE_DIR"  # where a node keeps orchard's repository and worktrees (default: the temp dir)
# (token, kind, value): (…, "calls", [(method, args, kwargs)…]), (…, "log", bytes), (…, "beat", None),
# (…, "result", Outcome)
Message = tuple[str, str, Any]


@dataclass(frozen=True)
class Outcome:
    """An attempt's end on a node: the workspace's result, and a bundle of its result commit (start..end)."""

    result: WorkspaceResult
    bundle: bytes | None


@dataclass(frozen=True)
class Opened:
    """An attempt running on the node: its token, and the driver's renewal round it was sent in."""

    token: str
    round_: int


def wanted_tasks(opened: dict[str, Opened], tokens: set[str], round_: int) -> list[str]:
    """The tasks whose attempts here renewal `round_` still wants: those it names, and those sent after it was
    made (Ray may deliver a renewal after an attempt sent later, which it could not have named)."""
    return sorted(task for task, attempt in opened.items() if attempt.token in tokens or attempt.round_ > round_)


class _Batch:
    """An `AttemptSink` that keeps each call (method, args, kwargs) for the next message to the driver."""

    def __init__(self, redactor: Redactor) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.redactor = redactor
        self.urgent = asyncio.Event()  # a step the driver journals (not a line): sent at once, not on the next tick

    def __getattr__(self, method: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((method, tuple(self._safe(a) for a in args),
                               {k: self._safe(v) for k, v in kwargs.items()}))
            if method not in BATCHED:
                self.urgent.set()
        return record

    def _safe(self, value: Any) -> Any:
        return self.redactor(value) if isinstance(value, str) else value

    def take(self) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
        calls, self.calls = self.calls, []
        self.urgent.clear()
        return calls


class NodeHost:
    """orchard on one node: created once per driver session, with `root` its directory there."""

    def __init__(self, run_id: str, *, lease_s: float, env_secrets: dict[str, str] | None = None) -> None:
        base = Path(os.environ.get(NODE_DIR_ENV) or tempfile.gettempdir())
        reap(base, run_id)  # what a killed driver's earlier session left here
        self.root = base / f"orchard-node-{os.getpid()}-{run_id}"
        user = init_repository(self.root / "repo", "main")
        self.layout = Layout.for_repo(user.root)
        self.layout.ensure()
        own = open_own_repository(user, self.layout.git_dir)
        self.redactor = Redactor.from_environments([os.environ, env_secrets or {}], ())
        processes = LedgerProcesses(ledger=self.root / LEDGER)
        self.host = Host(own, self.layout, WorktreePool(own.repo, self.layout), processes, self.redactor,
                         dict(os.environ))
        self.open: dict[str, Opened] = {}  # task → its attempt running here
        self.renewed = -1  # the round of the newest renewal applied
        self.lease_s = lease_s  # the driver's watchdog's wait: a quiet attempt beats ten times within it
        write_lease(self.root, [])
        start_keeper(self.root, term_s=lease_s)

    def renew(self, tokens: list[str], round_: int) -> None:
        """The driver's lease, its renewal number `round_`: of the attempts here, those of `tokens` are still
        wanted (the keeper kills the rest's processes, and everything once renewals stop)."""
        if round_ < self.renewed:
            return  # overtaken by a newer one
        self.renewed = round_
        write_lease(self.root, wanted_tasks(self.open, set(tokens), round_))

    def _lease_one_more(self, task_id: str) -> None:
        """A new attempt is word from the driver too: the lease is renewed with its task (the first attempt may
        come long after the host started, and Ray may deliver it before the first renewal)."""
        try:
            leased = set(json.loads((self.root / LEASE).read_text())["open"])
        except (OSError, ValueError, KeyError, TypeError):
            leased = set()
        write_lease(self.root, [*leased, task_id])

    def receive(self, bundle: bytes, tip: str) -> None:
        """Take commit `tip` from the driver's bundle (what it needs beyond what this node has)."""
        path = self.root / f"in-{tip}.bundle"
        path.write_bytes(bundle)
        try:
            fetch_bundle(self.host.git, path, tip=tip, into=f"refs/orchard/tips/{tip}")
        finally:
            path.unlink(missing_ok=True)

    async def run(self, job: AttemptJob, round_: int) -> AsyncIterator[Message]:
        """Run `job` here, sent after the driver's renewal `round_ - 1`; yields what its sink was told and its log
        as it grows, then its `Outcome`."""
        job, token = self._localised(job), job.token
        if job.task.id in self.open:  # one attempt of a task at a time: its worktree and processes are the task's
            raise RuntimeError(f"attempt {self.open[job.task.id].token} of {job.task.id} still runs on this node")
        self.open[job.task.id] = Opened(token, round_)
        self._lease_one_more(job.task.id)
        batch = _Batch(self.redactor)
        work = asyncio.ensure_future(run_workspace(job, self.host, batch))
        sent, quiet_since = 0, time.monotonic()
        try:
            while True:
                urgent = asyncio.ensure_future(batch.urgent.wait())
                await asyncio.wait({work, urgent}, timeout=BATCH_S, return_when=asyncio.FIRST_COMPLETED)
                urgent.cancel()
                chunk, sent = _log_since(job.log_path, sent)
                said = bool(chunk or batch.calls)
                if chunk:
                    yield (token, "log", chunk)
                if batch.calls:
                    yield (token, "calls", batch.take())
                if work.done():
                    break
                if said:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= every(self.lease_s):
                    yield (token, "beat", None)
                    quiet_since = time.monotonic()
            chunk, sent = _log_since(job.log_path, sent)
            while chunk:
                yield (token, "log", chunk)
                chunk, sent = _log_since(job.log_path, sent)
            result = work.result()
            yield (token, "result", Outcome(result, await asyncio.to_thread(self._result_bundle, job, result)))
        finally:
            if job.task.id in self.open and self.open[job.task.id].token == token:
                del self.open[job.task.id]

    def stop(self, task_id: str) -> None:
        """`orchard cancel TASK`: the task's processes here get SIGTERM, then SIGKILL after the grace period."""
        self.host.processes.cancel(task_id)

    def interrupt(self, hard: bool) -> None:
        """The run's Ctrl-C: every attempt here stops (`hard`: its processes are killed at once)."""
        self.host.processes.interrupt(hard)

    def end(self) -> None:
        """The driver's session ends: what still runs here is killed, and this node's directory goes (the
        driver has the logs, and the results it took)."""
        self.host.processes.interrupt(True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _localised(self, job: AttemptJob) -> AttemptJob:
        """The job with its files in this node's layout."""
        run, task, number = job.run_id, job.task.id, job.number
        return replace(job, link=self.layout.worktree(run, task), log_path=self.layout.log(run, task, number),
                       prompt_file=self.layout.prompt_file(run, task, number),
                       outbox=self.layout.outbox(run, task, number))

    def _result_bundle(self, job: AttemptJob, result: WorkspaceResult) -> bytes | None:
        end = result.verdict.end_commit
        if end is None or not result.started:
            return None
        path = self.root / f"out-{end}.bundle"
        try:
            known = [job.tip, *([job.theirs] if job.theirs else [])]  # the driver has both
            if not write_bundle(self.host.git, path, end, known=known):
                return None
            return path.read_bytes()
        except (GitError, OSError):
            return None
        finally:
            path.unlink(missing_ok=True)


def _log_since(path: Path, offset: int) -> tuple[bytes, int]:
    """What the log gained past `offset` (at most `LOG_CHUNK`), and the new offset."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            chunk = log.read(LOG_CHUNK)
    except FileNotFoundError:
        return b"", offset
    return chunk, offset + len(chunk)
