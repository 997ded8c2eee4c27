"""One live run per repository: an advisory `flock` on `.orchard/lock`, released by the kernel if the holder dies."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from orchard.errors import RepoLocked


class RunLock:
    """Held for the whole life of a run; a lock left by a dead process is simply taken over."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, run_id: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(self.path)
            os.close(fd)
            raise RepoLocked(
                f"repository is locked by live run {holder.get('run', '?')} (pid {holder.get('pid', '?')}); "
                "wait for it, or stop it with `orchard cancel`"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "run": run_id}).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


def read_holder(path: Path) -> dict[str, Any]:
    """What the current holder wrote: `{"pid", "run"}` (empty if unreadable)."""
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def live_holder(path: Path) -> dict[str, Any] | None:
    """The holder's details if a live process holds the lock, else None."""
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(path)
    finally:
        os.close(fd)
    return None
