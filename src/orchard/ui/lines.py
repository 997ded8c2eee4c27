"""Output without a terminal: plain timestamped lines, or NDJSON events (one JSON object per line)."""

from __future__ import annotations

import json
import time
from typing import TextIO

from orchard.core.events import AgentActivity, OrchardEvent


class PlainLines:
    """`HH:MM:SS task  message` for everything but the chatty agent activity."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, event: OrchardEvent) -> None:
        if isinstance(event, AgentActivity):
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
        who = f"{event.task_id:<20} " if event.task_id else ""
        self.out.write(f"{stamp} {who}{event.message()}\n")
        self.out.flush()


class NdjsonLines:
    """Every event as one JSON object per line, with its stable `type` name."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, event: OrchardEvent) -> None:
        self.out.write(json.dumps(event.to_dict(), default=str) + "\n")
        self.out.flush()
