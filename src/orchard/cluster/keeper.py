"""The keeper of a node: a small process beside the node's host actor that kills the process groups of the
attempts there when nobody is left to want them.

The host actor records each live process group it starts in a ledger (one file per group, named by its id and
holding its task) and writes the driver's lease each time the driver renews it: which of the node's attempts the
driver still counts as open. Every half second the keeper kills

- every group, and removes the node's directory, once the host actor is gone (Ray killed it, its node's raylet
  died, or the driver that owns it did);
- every group once the lease is older than its term (the driver died, froze, was cut off, or gave this node up
  as frozen and the node has woken since);
- a group whose task the lease, written after the group started, no longer lists (the driver dropped the attempt).

It is not a child of the actor (it forks away at start), so nothing that ends the actor's children ends it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from orchard.runtime.context import LiveProcesses
from orchard.runtime.process import daemonize, kill_group, run_briefly

LEASE = "lease.json"  # {"open": [task ids]}; its modification time is the driver's last renewal
LEDGER = "groups"  # one file per live process group: named by the group's id, holding its task and leader's birth
POLL_S = 0.5


@dataclass
class LedgerProcesses(LiveProcesses):
    """The node's live processes, each group also written to the ledger the keeper reads."""

    ledger: Path = field(default_factory=Path)

    def started(self, task_id: str, pgid: int) -> None:
        super().started(task_id, pgid)
        self.ledger.mkdir(parents=True, exist_ok=True)
        (self.ledger / str(pgid)).write_text(f"{task_id}\n{_born(pgid)}")

    def ended(self, task_id: str) -> None:
        pgid = self.groups.get(task_id)
        super().ended(task_id)
        if pgid is not None:
            (self.ledger / str(pgid)).unlink(missing_ok=True)


def every(watchdog_s: float) -> float:
    """How often a word is due within the watchdog's wait: a node's beat, the driver's renewal of a lease. Ten to a
    wait, 0.5-3 s apart: each is a Ray call, and a call costs the driver about 2 ms of CPU."""
    return min(3.0, max(0.5, watchdog_s / 10))


def write_lease(root: Path, open_tasks: list[str]) -> None:
    """The driver's renewal: the node's attempts it still counts as open (written whole, then moved in place)."""
    part = root / (LEASE + ".part")
    part.write_text(json.dumps({"open": sorted(open_tasks)}))
    part.replace(root / LEASE)


def sweep(root: Path, *, term_s: float, owner_alive: bool, now: float | None = None) -> list[int]:
    """Kill the groups of `root`'s ledger that nobody wants any more; the ids of those killed."""
    now = time.time() if now is None else now
    try:
        lease = root / LEASE
        leased_at, open_tasks = lease.stat().st_mtime, set(json.loads(lease.read_text())["open"])
    except (OSError, ValueError, KeyError, TypeError):
        leased_at, open_tasks = 0.0, set()  # no lease readable: as if it had lapsed
    lapsed = not owner_alive or now - leased_at > term_s
    killed = []
    for entry in _ledger(root):
        try:
            (task, born), started_at = entry.read_text().split("\n"), entry.stat().st_mtime
        except (OSError, ValueError):
            continue  # the group ended meanwhile (or its entry is half written)
        if lapsed or (task not in open_tasks and leased_at > started_at):
            pgid = int(entry.name)
            if _born(pgid) in (born, ""):  # its leader, or none (its helpers may live on): not a later process's id
                kill_group(pgid, signal.SIGKILL)
                killed.append(pgid)
            entry.unlink(missing_ok=True)
    return killed


def reap(base: Path, run_id: str) -> int:
    """A new host of run `run_id` on this machine: the directories of its earlier hosts whose actor is gone (the
    driver was killed, and with it their keepers or not) lose their processes and go. How many went."""
    reaped = 0
    for root in base.glob(f"orchard-node-*-{run_id}"):
        owner = root.name.removeprefix("orchard-node-").removesuffix(f"-{run_id}")
        if owner.isdigit() and psutil.pid_exists(int(owner)):
            continue  # a host still alive (another driver session's, or this one's): its keeper sees to it
        sweep(root, term_s=0.0, owner_alive=False)
        shutil.rmtree(root, ignore_errors=True)
        reaped += 1
    return reaped


def start_keeper(root: Path, *, term_s: float) -> None:
    """Start the keeper of `root` for this process (the host actor), away from this process's children."""
    argv = [sys.executable, "-m", "orchard.cluster.keeper", "--root", str(root), "--owner", str(os.getpid()),
            "--term", str(term_s)]
    started = run_briefly(argv, 30, cwd=root)  # it forks and returns at once: the keeper is what runs on
    if started.returncode != 0:
        raise OSError(f"the node's keeper did not start: {started.problem or started.output}")


def keep(root: Path, *, owner: int, term_s: float) -> None:
    """The keeper's loop, until the owner is gone (then everything is killed and `root` removed) or `root` is."""
    try:
        born = psutil.Process(owner).create_time()
    except psutil.Error:
        born = -1.0  # gone before its keeper began: everything goes at once
    while root.is_dir():
        alive = _alive(owner, born)
        sweep(root, term_s=term_s, owner_alive=alive)
        if not alive:
            shutil.rmtree(root, ignore_errors=True)
            return
        time.sleep(POLL_S)


def _born(pid: int) -> str:
    """When process `pid` started ("": there is none), to tell it from a later process given the same id."""
    try:
        return repr(psutil.Process(pid).create_time())
    except psutil.Error:
        return ""


def _alive(pid: int, born: float) -> bool:
    """Whether process `pid` is still the one that started at `born` (not a later one given its id)."""
    try:
        process = psutil.Process(pid)
        return process.create_time() == born and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _ledger(root: Path) -> list[Path]:
    with contextlib.suppress(OSError):
        return [entry for entry in (root / LEDGER).iterdir() if entry.name.isdigit()]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orchard.cluster.keeper")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--owner", type=int, required=True)
    parser.add_argument("--term", type=float, required=True)
    args = parser.parse_args(argv)
    if not daemonize(args.root / "keeper.log"):  # the starter's child goes at once: the keeper is nobody's child
        return 0
    keep(args.root, owner=args.owner, term_s=args.term)
    return 0


if __name__ == "__main__":
    sys.exit(main())
