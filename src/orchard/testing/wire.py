"""Shared pieces of the fake wire APIs: the parsed conversation, the script marker, SSE framing, stable ids."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from orchard.testing.script import Fail, Step, Usage

MARKER = re.compile(r"\[\[script:([A-Za-z0-9_.@:/+-]+)\]\]")
Event = tuple[str, dict[str, Any]]
DONE = "[DONE]"  # the event name of the bare `data: [DONE]` that ends a Chat Completions stream


@dataclass(frozen=True)
class Conversation:
    """What the server needs from one model request: whose script, which step, where the agent works."""

    key: str | None
    turns: int
    cwd: str | None
    tools: frozenset[str]
    tool_types: dict[str, str]
    model: str
    stream: bool
    side: bool

    @property
    def script_name(self) -> str | None:
        """`edit` for the keys `edit` and `edit@task-1` (one script, several conversations)."""
        return self.key.split("@", 1)[0] if self.key else None


def find_marker(texts: Iterator[str]) -> str | None:
    """The key of the first `[[script:KEY]]` marker in `texts`."""
    for chunk in texts:
        found = MARKER.search(chunk)
        if found:
            return found.group(1)
    return None


def sse(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event: `event: NAME` (none when NAME is ""), `data: JSON`, blank line; DONE is `data: [DONE]`."""
    if name == DONE:
        return b"data: [DONE]\n\n"
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def slug(key: str | None) -> str:
    """An id-safe form of a conversation key."""
    return re.sub(r"[^A-Za-z0-9]+", "_", key or "side").strip("_")[:40] or "x"


def chunks(text: str, parts: int = 2) -> list[str]:
    """`text` cut into up to `parts` non-empty pieces (so clients see real deltas)."""
    if len(text) < parts:
        return [text] if text else []
    size = -(-len(text) // parts)
    return [text[i:i + size] for i in range(0, len(text), size)]


def text_of(content: Any) -> Iterator[str]:
    """The text parts of a message's `content` (a string or a list of typed blocks), in order."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                yield block["text"]


def count_runs(flags: list[bool]) -> int:
    """How many runs of consecutive True values `flags` holds (assistant turns in a history)."""
    return sum(1 for i, flag in enumerate(flags) if flag and (i == 0 or not flags[i - 1]))


class Dialect(Protocol):
    """What a wire API module provides (orchard.testing.anthropic, orchard.testing.openai, orchard.testing.chat)."""

    REPLY_ID: str
    REQUEST_ID_HEADER: str
    STREAM_FAIL_STATUS: int

    def conversation(self, body: dict[str, Any]) -> Conversation:
        """Parse a model request."""

    def reply_json(self, step: Step, conv: Conversation, usage: Usage, reply_id: str) -> dict[str, Any]:
        """The non-streaming reply to a step."""

    def stream_events(self, step: Step, conv: Conversation, usage: Usage, reply_id: str) -> list[Event]:
        """The complete SSE reply to a step."""

    def error_body(self, fail: Fail, conv: Conversation, request_id: str) -> dict[str, Any]:
        """The API's JSON error body for an HTTP error."""

    def stream_fail_events(self, conv: Conversation, usage: Usage, reply_id: str, kind: str,
                           message: str) -> list[Event]:
        """A stream that opens, then fails."""

    def hang_events(self, conv: Conversation, usage: Usage, reply_id: str, partial: str) -> list[Event]:
        """The opening events of a reply that never finishes."""
