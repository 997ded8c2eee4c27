"""Output without a terminal: plain timestamped lines, or NDJSON events (one JSON object per line).

Plain lines show agent text with its control characters made visible (`core.safe_text`); NDJSON stays exact, as
JSON escapes them itself."""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import TextIO

from orchard.core.events import AgentActivity, OrchardEvent, QueueChanged
from orchard.core.safe_text import safe_line


class _LineWriter:
    """Writes whole lines; once the reader has gone (`orchard run | head`), the rest is discarded quietly.

    The run itself goes on to its end: a closed pipe must not stop the agents or print a traceback.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.closed = False

    def write_line(self, line: str) -> None:
        if self.closed:
            return
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except BrokenPipeError:
            self.closed = True
            # Point the descriptor at /dev/null so later writes (the summary) and the flush at exit stay silent.
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
                os.close(devnull)


class PlainLines(_LineWriter):
    """`HH:MM:SS task  message` for everything but the chatty agent activity and the queue's counts (the status lines
    say the same); one line per event, its lines joined
    by ` | ` and any other control character (a CR, an escape sequence) shown as its escape."""

    def __call__(self, event: OrchardEvent) -> None:
        if isinstance(event, AgentActivity | QueueChanged):
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
        who = f"{event.task_id:<20} " if event.task_id else ""
        # split on newlines only: splitlines() would also swallow CR, FF and the like, which must show instead
        message = " | ".join(part.strip() for part in event.message().split("\n") if part.strip())
        self.write_line(safe_line(f"{stamp} {who}{message}"))


class NdjsonLines(_LineWriter):
    """Every event as one JSON object per line, with its stable `type` name."""

    def __call__(self, event: OrchardEvent) -> None:
        self.write_line(json.dumps(event.to_dict(), default=str))
