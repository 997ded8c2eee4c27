"""Anthropic Messages dialect (Claude Code): request parsing, SSE and JSON replies, error bodies.

Claude Code 2.1.330 sends `POST /v1/messages?beta=true` with `stream: true`, its tools (Write, Edit, Read, Bash …),
and puts ` - Primary working directory: <cwd>` in a system-reminder block of the first user message (older versions:
in the system prompt), which the server uses to turn relative script paths into the absolute `file_path` Write/Edit
need. A step's usage goes out as `message_start.usage` (input and cache tokens) and `message_delta.usage.output_tokens`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from orchard.testing.script import EditFile, Fail, Run, Step, Text, Usage, WriteFile
from orchard.testing.wire import Conversation, Event, chunks, count_runs, find_marker, slug, text_of

REPLY_ID = "msg_fake"
REQUEST_ID_HEADER = "request-id"
STREAM_FAIL_STATUS = 529  # a stream_error() step answers a non-streaming request with this
CWD_LINE = re.compile(r"Primary working directory: *(\S[^\n]*)")
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               529: "overloaded_error"}
ERROR_MESSAGES = {401: "invalid x-api-key", 403: "Your API key does not have permission to use the specified resource.",
                  429: "Number of request tokens has exceeded your per-minute rate limit (fake model server)",
                  500: "Internal server error", 529: "Overloaded"}


def _user_texts(messages: list[Any]) -> Iterator[str]:
    """Text of the user messages, first to last."""
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            yield from text_of(message.get("content"))


def conversation(body: dict[str, Any]) -> Conversation:
    """Key, step index (assistant turns so far), cwd and tools of a Messages request."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    cwd = None
    for chunk in [*text_of(body.get("system")), *_user_texts(messages[:1])]:
        found = CWD_LINE.search(chunk)
        if found:
            cwd = found.group(1).strip()
            break
    return Conversation(
        key=find_marker(_user_texts(messages)) if tools else None,
        turns=count_runs([m.get("role") == "assistant" for m in messages]),
        cwd=cwd,
        tools=frozenset(str(t.get("name")) for t in tools),
        tool_types={str(t.get("name")): str(t.get("type", "custom")) for t in tools},
        model=str(body.get("model") or "claude-fake"),
        stream=bool(body.get("stream")),
        side=not tools,
    )


def _absolute(path: str, cwd: str | None) -> str:
    """`path` made absolute against the agent's working directory (Write/Edit refuse relative paths)."""
    if path.startswith("/") or not cwd:
        return path
    return f"{cwd.rstrip('/')}/{path}"


def content_blocks(step: Step, conv: Conversation) -> list[dict[str, Any]]:
    """The assistant content of a step: text blocks and tool_use blocks (Write, Read + Edit, Bash)."""
    blocks: list[dict[str, Any]] = []

    def tool(name: str, data: dict[str, Any]) -> None:
        """Append one tool_use block with a stable id."""
        blocks.append({"type": "tool_use", "id": f"toolu_{slug(conv.key)}_{conv.turns}_{len(blocks)}", "name": name,
                       "input": data})

    for action in step.actions:
        if isinstance(action, Text):
            blocks.append({"type": "text", "text": action.text})
        elif isinstance(action, WriteFile):
            path = _absolute(action.path, conv.cwd)
            if action.read_first:
                tool("Read", {"file_path": path})
            tool("Write", {"file_path": path, "content": action.content})
        elif isinstance(action, EditFile):
            path = _absolute(action.path, conv.cwd)
            tool("Read", {"file_path": path})
            tool("Edit", {"file_path": path, "old_string": action.old, "new_string": action.new, "replace_all": False})
        elif isinstance(action, Run):
            tool("Bash", {"command": action.command, "description": action.description})
    return blocks


def _stop_reason(blocks: list[dict[str, Any]]) -> str:
    """`tool_use` when the reply calls a tool, else `end_turn`."""
    return "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"


def _usage(usage: Usage, output_tokens: int) -> dict[str, Any]:
    """A usage object as the Messages API reports it."""
    return {"input_tokens": usage.input_tokens, "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens, "output_tokens": output_tokens,
            "service_tier": "standard"}


def _message(msg_id: str, conv: Conversation, content: list[dict[str, Any]], usage: Usage, *, output_tokens: int,
             stop: str | None) -> dict[str, Any]:
    """A Messages API message object."""
    return {"id": msg_id, "type": "message", "role": "assistant", "model": conv.model, "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": _usage(usage, output_tokens)}


def reply_json(step: Step, conv: Conversation, usage: Usage, msg_id: str) -> dict[str, Any]:
    """The non-streaming reply to a step."""
    blocks = content_blocks(step, conv)
    return _message(msg_id, conv, blocks, usage, output_tokens=usage.output_tokens, stop=_stop_reason(blocks))


def _start(conv: Conversation, usage: Usage, msg_id: str) -> list[Event]:
    """`message_start` (with the input usage) and a `ping`, as the real API opens a stream."""
    start = _message(msg_id, conv, [], usage, output_tokens=min(1, usage.output_tokens), stop=None)
    return [("message_start", {"type": "message_start", "message": start}), ("ping", {"type": "ping"})]


def stream_events(step: Step, conv: Conversation, usage: Usage, msg_id: str) -> list[Event]:
    """The full SSE reply to a step: start, each block (start, deltas, stop), message_delta, message_stop."""
    blocks = content_blocks(step, conv)
    events = _start(conv, usage, msg_id)
    for i, block in enumerate(blocks):
        if block["type"] == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "text", "text": ""}}))
            deltas = [{"type": "text_delta", "text": part} for part in chunks(block["text"])]
        else:
            opening = {**block, "input": {}}
            events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": opening}))
            deltas = [{"type": "input_json_delta", "partial_json": part}
                      for part in chunks(json.dumps(block["input"]), 3)]
        events += [("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": _stop_reason(blocks), "stop_sequence": None},
                                     "usage": {"output_tokens": usage.output_tokens}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def error_body(fail: Fail, conv: Conversation, request_id: str) -> dict[str, Any]:
    """`{"type":"error","error":{"type":…,"message":…},"request_id":…}` for an HTTP error."""
    kind = fail.error_type or ERROR_TYPES.get(fail.status, "api_error")
    message = fail.message or ERROR_MESSAGES.get(fail.status, f"fake error {fail.status}")
    if fail.resets_in is not None:
        kind = ERROR_TYPES[429]
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def stream_fail_events(conv: Conversation, usage: Usage, msg_id: str, kind: str, message: str) -> list[Event]:
    """A stream that opens normally, then carries `event: error` (as when the API overloads mid-stream)."""
    return [*_start(conv, usage, msg_id),
            ("error", {"type": "error", "error": {"type": kind, "message": message}})]


def hang_events(conv: Conversation, usage: Usage, msg_id: str, partial: str) -> list[Event]:
    """The opening of a text reply that never finishes: message_start, ping, a text block with one delta."""
    return [*_start(conv, usage, msg_id),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": partial}})]


def count_tokens(body: dict[str, Any]) -> dict[str, Any]:
    """`/v1/messages/count_tokens`: a rough estimate (4 characters a token)."""
    return {"input_tokens": max(1, len(json.dumps(body.get("messages") or [])) // 4)}
