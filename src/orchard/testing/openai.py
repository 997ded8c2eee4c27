"""OpenAI Responses dialect (Codex CLI): request parsing, SSE and JSON replies, error bodies.

Codex 0.169.0 sends `POST /v1/responses` with `stream: true`, `store: false` and the whole history in `input` (no
`previous_response_id`): developer messages, a user `<environment_context>` message with `<cwd>`, the prompt, then
`function_call` / `custom_tool_call` items and their `*_output` items. Tools depend on the model's metadata: `gpt-5.5`
(in the bundled catalog) gets `exec_command` and the freeform `apply_patch` custom tool; an unknown slug such as
`gpt-5-codex` gets `exec_command` only. The server picks what is offered: apply_patch for writes and edits when
present (Codex then reports `file_change` items), otherwise shell commands through `exec_command`.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Iterator
from typing import Any

from orchard.testing.script import EditFile, Fail, Run, Step, Text, Usage, WriteFile
from orchard.testing.wire import Conversation, Event, chunks, count_runs, find_marker, slug, text_of

REPLY_ID = "resp_fake"
REQUEST_ID_HEADER = "x-request-id"
STREAM_FAIL_STATUS = 500  # a stream_error() step answers a non-streaming request with this
CWD_TAG = re.compile(r"<cwd>([^<]+)</cwd>")
ASSISTANT_ITEMS = {"function_call", "custom_tool_call", "local_shell_call", "reasoning", "web_search_call"}
ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (fake model server)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: test-key."),
    403: ("permission_error", "unsupported_country_region_territory", "Country, region, or territory not supported."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("tokens", "rate_limit_exceeded", "Rate limit reached for {model} on tokens per min (TPM): Limit 30000, "
          "Used 30000, Requested 1200. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", "server_is_overloaded", "The server is overloaded. Please try again later."),
}
EDIT_SCRIPT = ("import pathlib,sys; p=pathlib.Path(sys.argv[1]); t=p.read_text(); "
               'sys.exit("old text not found") if sys.argv[2] not in t '
               "else p.write_text(t.replace(sys.argv[2],sys.argv[3],1))")


def _is_assistant(item: dict[str, Any]) -> bool:
    """Whether a history item was produced by the model."""
    return item.get("type") in ASSISTANT_ITEMS or (item.get("type") == "message" and item.get("role") == "assistant")


def _user_texts(items: list[dict[str, Any]]) -> Iterator[str]:
    """Text of the user messages, first to last."""
    for item in items:
        if item.get("type", "message") == "message" and item.get("role") == "user":
            yield from text_of(item.get("content"))


def conversation(body: dict[str, Any]) -> Conversation:
    """Key, step index (assistant turns so far), cwd and tools of a Responses request."""
    raw = body.get("input")
    items = [i for i in raw if isinstance(i, dict)] if isinstance(raw, list) else [
        {"type": "message", "role": "user", "content": str(raw or "")}]
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    cwd = None
    for chunk in _user_texts(items):
        found = CWD_TAG.search(chunk)
        if found:
            cwd = found.group(1).strip()
            break
    return Conversation(
        key=find_marker(_user_texts(items)) if tools else None,
        turns=count_runs([_is_assistant(i) for i in items]),
        cwd=cwd,
        tools=frozenset(str(t.get("name") or t.get("type")) for t in tools),
        tool_types={str(t.get("name") or t.get("type")): str(t.get("type")) for t in tools},
        model=str(body.get("model") or "gpt-fake"),
        stream=bool(body.get("stream")),
        side=not tools,
    )


def _lines(text: str, sign: str) -> list[str]:
    """`text` as patch lines prefixed with `sign` (a trailing newline does not add an empty line)."""
    return [sign + line for line in text.removesuffix("\n").split("\n")] if text else []


def _patch_call(patch: str, conv: Conversation, call: dict[str, Any]) -> dict[str, Any]:
    """apply_patch as the custom (freeform) tool or as a function tool, whichever the request offers."""
    if conv.tool_types.get("apply_patch") == "custom":
        return {"type": "custom_tool_call", **call, "name": "apply_patch", "input": patch}
    return {"type": "function_call", **call, "name": "apply_patch", "arguments": json.dumps({"input": patch})}


def _shell_call(command: str, conv: Conversation, call: dict[str, Any]) -> dict[str, Any]:
    """A shell command through exec_command (`cmd`), shell_command (`command`) or shell (argv), as offered."""
    args: dict[str, Any]
    if "exec_command" in conv.tools or not conv.tools & {"shell_command", "shell"}:
        name, args = "exec_command", {"cmd": command}
    elif "shell_command" in conv.tools:
        name, args = "shell_command", {"command": command}
    else:
        name, args = "shell", {"command": ["bash", "-lc", command]}
    return {"type": "function_call", **call, "name": name, "arguments": json.dumps(args)}


def output_items(step: Step, conv: Conversation) -> list[dict[str, Any]]:
    """The output items of a step: messages, apply_patch calls and shell calls, with stable ids."""
    items: list[dict[str, Any]] = []
    patch = "apply_patch" in conv.tools
    for action in step.actions:
        n = f"{slug(conv.key)}_{conv.turns}_{len(items)}"
        call = {"id": f"fc_{n}", "call_id": f"call_{n}", "status": "completed"}
        if isinstance(action, Text):
            items.append({"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                          "content": [{"type": "output_text", "text": action.text, "annotations": []}]})
        elif isinstance(action, WriteFile) and patch and action.content.endswith("\n") and not action.read_first:
            body = "\n".join([f"*** Add File: {action.path}", *_lines(action.content, "+")])
            items.append(_patch_call(f"*** Begin Patch\n{body}\n*** End Patch\n", conv, call))
        elif isinstance(action, WriteFile):
            folder = action.path.rsplit("/", 1)[0] if "/" in action.path else ""
            mkdir = f"mkdir -p {shlex.quote(folder)} && " if folder else ""
            items.append(_shell_call(f"{mkdir}printf %s {shlex.quote(action.content)} > {shlex.quote(action.path)}",
                                     conv, call))
        elif isinstance(action, EditFile) and patch:
            hunk = ["@@", *_lines(action.old, "-"), *_lines(action.new, "+")]
            body = "\n".join([f"*** Update File: {action.path}", *hunk])
            items.append(_patch_call(f"*** Begin Patch\n{body}\n*** End Patch\n", conv, call))
        elif isinstance(action, EditFile):
            argv = ["python3", "-c", EDIT_SCRIPT, action.path, action.old, action.new]
            items.append(_shell_call(shlex.join(argv), conv, call))
        elif isinstance(action, Run):
            items.append(_shell_call(action.command, conv, call))
    return items


def _usage(usage: Usage) -> dict[str, Any]:
    """A Responses usage object (cached tokens are part of `input_tokens`)."""
    return {"input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": usage.cache_read_input_tokens},
            "output_tokens": usage.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.input_tokens + usage.output_tokens}


def _response(resp_id: str, conv: Conversation, status: str, output: list[dict[str, Any]], *,
              usage: Usage | None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Responses API response object."""
    return {"id": resp_id, "object": "response", "created_at": int(time.time()), "status": status,
            "model": conv.model, "output": output, "error": error, "usage": _usage(usage) if usage else None}


def reply_json(step: Step, conv: Conversation, usage: Usage, resp_id: str) -> dict[str, Any]:
    """The non-streaming reply to a step."""
    return _response(resp_id, conv, "completed", output_items(step, conv), usage=usage)


def _opening(conv: Conversation, resp_id: str) -> list[Event]:
    """`response.created` and `response.in_progress`."""
    created = _response(resp_id, conv, "in_progress", [], usage=None)
    return [("response.created", {"type": "response.created", "response": created}),
            ("response.in_progress", {"type": "response.in_progress", "response": created})]


def _item_events(i: int, item: dict[str, Any]) -> list[Event]:
    """added, the deltas of a message / function call / custom tool call, done."""
    kind = item["type"]
    blank: dict[str, dict[str, Any]] = {"message": {"content": []}, "function_call": {"arguments": ""},
                                        "custom_tool_call": {"input": ""}}
    empty = {**item, "status": "in_progress", **blank.get(kind, {})}
    events: list[Event] = [("response.output_item.added", {"type": "response.output_item.added", "output_index": i,
                                                           "item": empty})]
    ref = {"item_id": item["id"], "output_index": i}
    if kind == "message":
        part = {"type": "output_text", "text": "", "annotations": []}
        text = item["content"][0]["text"]
        events.append(("response.content_part.added", {"type": "response.content_part.added", **ref,
                                                       "content_index": 0, "part": part}))
        events += [("response.output_text.delta", {"type": "response.output_text.delta", **ref, "content_index": 0,
                                                   "delta": d}) for d in chunks(text)]
        events.append(("response.output_text.done", {"type": "response.output_text.done", **ref, "content_index": 0,
                                                     "text": text}))
        events.append(("response.content_part.done", {"type": "response.content_part.done", **ref,
                                                      "content_index": 0, "part": {**part, "text": text}}))
    elif kind == "function_call":
        events += [("response.function_call_arguments.delta", {"type": "response.function_call_arguments.delta",
                                                               **ref, "delta": d}) for d in chunks(item["arguments"])]
        events.append(("response.function_call_arguments.done", {"type": "response.function_call_arguments.done",
                                                                 **ref, "arguments": item["arguments"]}))
    elif kind == "custom_tool_call":
        events += [("response.custom_tool_call_input.delta", {"type": "response.custom_tool_call_input.delta",
                                                              **ref, "delta": d}) for d in chunks(item["input"])]
        events.append(("response.custom_tool_call_input.done", {"type": "response.custom_tool_call_input.done",
                                                                **ref, "input": item["input"]}))
    events.append(("response.output_item.done", {"type": "response.output_item.done", "output_index": i,
                                                 "item": item}))
    return events


def stream_events(step: Step, conv: Conversation, usage: Usage, resp_id: str) -> list[Event]:
    """The full SSE reply to a step: created, in_progress, every item's events, completed (with usage)."""
    items = output_items(step, conv)
    events = _opening(conv, resp_id)
    for i, item in enumerate(items):
        events += _item_events(i, item)
    done = _response(resp_id, conv, "completed", items, usage=usage)
    events.append(("response.completed", {"type": "response.completed", "response": done}))
    return [(name, {**data, "sequence_number": n}) for n, (name, data) in enumerate(events)]


def error_body(fail: Fail, conv: Conversation, request_id: str) -> dict[str, Any]:
    """`{"error":{"message","type","param","code"}}` for an HTTP error."""
    kind, code, message = ERRORS.get(fail.status, ("server_error", None, f"fake error {fail.status}"))
    body: dict[str, Any] = {"message": fail.message or message.format(model=conv.model),
                            "type": fail.error_type or kind, "param": None, "code": code}
    if fail.resets_in is not None:
        body.update(code=None, plan_type="plus", resets_in_seconds=fail.resets_in,
                    resets_at=int(time.time()) + fail.resets_in)
    return {"error": body}


def stream_fail_events(conv: Conversation, usage: Usage, resp_id: str, kind: str, message: str) -> list[Event]:
    """A stream that opens, then ends with `response.failed` carrying `{code: kind, message}` (usage unused)."""
    failed = _response(resp_id, conv, "failed", [], usage=None, error={"code": kind, "message": message})
    return [*_opening(conv, resp_id), ("response.failed", {"type": "response.failed", "response": failed})]


def hang_events(conv: Conversation, usage: Usage, resp_id: str, partial: str) -> list[Event]:
    """The opening of a message that never completes: created, in_progress, item added, one delta (usage unused)."""
    item = {"type": "message", "id": f"msg_{slug(conv.key)}_hang", "role": "assistant", "status": "in_progress",
            "content": []}
    ref = {"item_id": item["id"], "output_index": 0}
    return [*_opening(conv, resp_id),
            ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0, "item": item}),
            ("response.content_part.added", {"type": "response.content_part.added", **ref, "content_index": 0,
                                             "part": {"type": "output_text", "text": "", "annotations": []}}),
            ("response.output_text.delta", {"type": "response.output_text.delta", **ref, "content_index": 0,
                                            "delta": partial})]
