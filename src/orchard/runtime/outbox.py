"""An attempt's outbox: the one directory of orchard's that its agent may write (bound writable in the sandbox).

The agent leaves its summary there (`$ORCHARD_SUMMARY_FILE`) and `orchard add`, run by the agent, leaves its
requests there (`runtime.adding`); orchard reads both as untrusted input: regular files only (never a link), a
bounded number of bytes, and nothing in it is ever executed or trusted to name a path elsewhere.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from orchard.agents.base import SUMMARY_FILE

READ_LIMIT = 256 * 1024  # bytes read of one file an agent left: a summary is capped far below, a request too


def prepare_outbox(outbox: Path) -> None:
    """An empty, private outbox for a new attempt (what an earlier attempt left there is not this one's)."""
    if outbox.is_dir() and not outbox.is_symlink():
        shutil.rmtree(outbox, ignore_errors=True)
    outbox.mkdir(parents=True, exist_ok=True, mode=0o700)


def read_untrusted(path: Path, limit: int = READ_LIMIT) -> str | None:
    """The text of a regular file an agent wrote, at most `limit` bytes (None when it is missing, a link, or not a
    regular file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        return fh.read(limit).decode("utf-8", errors="replace")


def read_summary(outbox: Path) -> str:
    """The summary the agent wrote to `$ORCHARD_SUMMARY_FILE`, or ""."""
    return read_untrusted(outbox / SUMMARY_FILE) or ""
