"""What each running task has to itself: a slot (a small integer unique among the tasks running at once, reused
after) and, when its environment asks for `ports`, a block of that many consecutive TCP ports free on loopback and
distinct from every other running task's block. They reach every process of the task as `ORCHARD_SLOT`,
`ORCHARD_PORT` (the block's first, also `CONDUCTOR_PORT`), `COMPOSE_PROJECT_NAME` and in `environment.env` as `{slot}`
and `{port}`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from orchard.core.model import Environment

FIRST_PORT = 20000  # above the usual services' ports, below Linux's default ephemeral range (32768-60999)
LAST_PORT = 32767


@dataclass
class TaskResources:
    """The slots and port blocks of the tasks running now (attempts start and end in worker tasks: a lock)."""

    slots: dict[str, int] = field(default_factory=dict)
    ports: dict[str, range] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def acquire(self, task_id: str, count: int) -> tuple[int, int | None]:
        """A slot for the task, and the first of `count` ports reserved for it (None when it asked for none, or
        when no such block is free)."""
        with self.lock:
            taken = set(self.slots.values())
            slot = next(i for i in range(len(taken) + 1) if i not in taken)
            self.slots[task_id] = slot
            block = self._block(count) if count else None
            if block is not None:
                self.ports[task_id] = block
            return slot, block.start if block is not None else None

    def release(self, task_id: str) -> None:
        with self.lock:
            self.slots.pop(task_id, None)
            self.ports.pop(task_id, None)

    def _block(self, count: int) -> range | None:
        """The lowest block of `count` ports no running task holds and nothing on this machine listens on."""
        held = [r for r in self.ports.values()]
        for start in range(FIRST_PORT, LAST_PORT - count + 2, count):
            block = range(start, start + count)
            if any(start < r.stop and r.start < block.stop for r in held):
                continue
            if all(_free(port) for port in block):
                return block
        return None


def _free(port: int) -> bool:
    """Whether a TCP port on loopback can be bound now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def task_variables(*, run_id: str, task_id: str, root: str, worktree: str, slot: int, port: int | None,
                   environment: Environment) -> dict[str, str]:
    """The variables every process of a running task gets: its resources, Conductor's names for them (scripts
    written for Conductor run as they are, whichever file the setup came from), and `environment.env` filled in."""
    values = {"slot": str(slot), "port": str(port or ""), "task_id": task_id, "worktree": worktree}
    found = {"ORCHARD_ROOT": root, "ORCHARD_SLOT": str(slot), "COMPOSE_PROJECT_NAME": f"orchard-{run_id}-{slot}",
             **({"ORCHARD_PORT": str(port)} if port is not None else {}),
             **_conductor_aliases(root, worktree, task_id, port)}
    for name, template in environment.env:
        found[name] = _fill(template, values)
    return found


def _conductor_aliases(root: str, worktree: str, task_id: str, port: int | None) -> dict[str, str]:
    """Conductor's variables: the repository, the workspace (named for the task: the pool directory's name says
    nothing) and the first of its ports."""
    return {"CONDUCTOR_ROOT_PATH": root, "CONDUCTOR_WORKSPACE_PATH": worktree, "CONDUCTOR_WORKSPACE_NAME": task_id,
            **({"CONDUCTOR_PORT": str(port)} if port is not None else {})}


def _fill(template: str, values: dict[str, str]) -> str:
    """`{slot}`, `{port}`, `{task_id}` and `{worktree}` replaced; any other brace left as written."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template
