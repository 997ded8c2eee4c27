"""The fake model server alone (no agent CLIs): SSE framing, step choice from history, errors, hangs, concurrency."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

import pytest

from orchard.testing import (
    FakeModelServer,
    Usage,
    edit_file,
    error,
    hang,
    run,
    step,
    stream_error,
    text,
    usage_limit,
    write_file,
)
from orchard.testing.script import Step

CWD_REMINDER = "<system-reminder>\n# Environment\n - Primary working directory: /work/repo\n</system-reminder>"
CLAUDE_TOOLS = [{"name": n, "input_schema": {"type": "object"}} for n in ("Bash", "Edit", "Read", "Write")]
CODEX_TOOLS = [{"type": "function", "name": "exec_command", "parameters": {}},
               {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}}]


def post(server: FakeModelServer, path: str, body: dict[str, Any],
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """POST JSON; returns status, lower-cased headers and the whole (de-chunked) body."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        conn.close()


def get(server: FakeModelServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET; returns status and the JSON body."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def sse_events(raw: str) -> list[dict[str, Any]]:
    """Strictly parse an SSE body: every event is `event: T` + `data: JSON` whose `type` is T, blank-line separated."""
    assert raw.endswith("\n\n")
    events = []
    for block in raw.split("\n\n")[:-1]:
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name_line.removeprefix("event: ")
        events.append(data)
    return events


def streamed_text(raw: str) -> str:
    """The text a Messages stream carries, deltas joined."""
    return "".join(e["delta"].get("text", "") for e in sse_events(raw) if e["type"] == "content_block_delta")


def claude_body(key: str, history: list[dict[str, Any]] | None = None, stream: bool = True) -> dict[str, Any]:
    """A Messages request shaped like Claude Code 2.1.330's."""
    first = {"role": "user", "content": [{"type": "text", "text": CWD_REMINDER},
                                         {"type": "text", "text": f"Do it. [[script:{key}]]"}]}
    return {"model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": stream, "tools": CLAUDE_TOOLS,
            "system": [{"type": "text", "text": "You are a Claude agent."}], "messages": [first, *(history or [])]}


def codex_body(key: str, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Responses request shaped like Codex 0.169.0's."""
    items = [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
             {"type": "message", "role": "user",
              "content": [{"type": "input_text", "text": "<environment_context>\n  <cwd>/work/repo</cwd>\n"}]},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"[[script:{key}]]"}]}]
    return {"model": "gpt-5.5", "stream": True, "store": False, "tools": CODEX_TOOLS, "input": items + (history or [])}


def tool_turn(n: int) -> list[dict[str, Any]]:
    """One Claude tool round trip: the assistant's tool_use and the user's tool_result."""
    return [{"role": "assistant", "content": [{"type": "tool_use", "id": f"t{n}", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{n}", "content": "ok"}]}]


def test_anthropic_stream_is_framed_like_the_messages_api() -> None:
    script = [step(text("Writing it."), write_file("src/x.py", "print(1)\n"), run("pytest -q"),
                   usage=Usage(321, 12, cache_read_input_tokens=7))]
    with FakeModelServer({"s": script}) as server:
        status, headers, raw = post(server, "/v1/messages?beta=true", claude_body("s"))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers["request-id"].startswith("req_")
    events = sse_events(raw)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["message_start", "ping"] and kinds[-2:] == ["message_delta", "message_stop"]
    assert events[0]["message"]["usage"]["input_tokens"] == 321
    assert events[0]["message"]["usage"]["cache_read_input_tokens"] == 7
    assert events[-2]["delta"]["stop_reason"] == "tool_use" and events[-2]["usage"]["output_tokens"] == 12
    blocks: dict[int, dict[str, Any]] = {}
    for e in events:
        if e["type"] == "content_block_start":
            blocks[e["index"]] = {**e["content_block"], "text": "", "json": ""}
        elif e["type"] == "content_block_delta":
            delta = e["delta"]
            blocks[e["index"]]["text" if delta["type"] == "text_delta" else "json"] += (
                delta.get("text") or delta.get("partial_json"))
    assert blocks[0]["type"] == "text" and blocks[0]["text"] == "Writing it."
    assert (blocks[1]["name"], json.loads(blocks[1]["json"])) == (
        "Write", {"file_path": "/work/repo/src/x.py", "content": "print(1)\n"})
    assert (blocks[2]["name"], json.loads(blocks[2]["json"])["command"]) == ("Bash", "pytest -q")
    assert kinds.count("content_block_stop") == 3
    assert server.usage_reported == {"s": Usage(321, 12, 7, 0, 1)}


def test_claude_edit_reads_first_and_plain_text_ends_the_turn() -> None:
    with FakeModelServer({"e": [edit_file("a.txt", "one", "two"), text("Done.")]}) as server:
        _, _, first = post(server, "/v1/messages", claude_body("e"))
        _, _, second = post(server, "/v1/messages", claude_body("e", tool_turn(1)))
    starts = [e["content_block"] for e in sse_events(first) if e["type"] == "content_block_start"]
    assert [b["name"] for b in starts] == ["Read", "Edit"]
    last = sse_events(second)
    assert last[-2]["delta"]["stop_reason"] == "end_turn"
    assert [e["delta"]["text"] for e in last if e["type"] == "content_block_delta"] == ["Don", "e."]


def test_openai_stream_is_framed_like_the_responses_api() -> None:
    script = [step(write_file("notes.txt", "a\nb\n"), edit_file("notes.txt", "a", "A"), run("ls -la"),
                   usage=Usage(500, 40, cache_read_input_tokens=100)), text("Done.")]
    with FakeModelServer({"c": script}) as server:
        status, headers, raw = post(server, "/v1/responses", codex_body("c"))
    assert status == 200 and headers["x-request-id"].startswith("req_")
    events = sse_events(raw)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [(i["type"], i["name"]) for i in done] == [
        ("custom_tool_call", "apply_patch"), ("custom_tool_call", "apply_patch"), ("function_call", "exec_command")]
    assert done[0]["input"] == "*** Begin Patch\n*** Add File: notes.txt\n+a\n+b\n*** End Patch\n"
    assert done[1]["input"] == "*** Begin Patch\n*** Update File: notes.txt\n@@\n-a\n+A\n*** End Patch\n"
    assert json.loads(done[2]["arguments"]) == {"cmd": "ls -la"}
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"
                     and e["item_id"] == done[0]["id"])
    assert deltas == done[0]["input"]
    usage = events[-1]["response"]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["input_tokens_details"]["cached_tokens"]) == (
        500, 40, 100)


def test_openai_without_apply_patch_uses_the_shell() -> None:
    body = codex_body("c")
    body["tools"] = [{"type": "function", "name": "shell_command", "parameters": {}}]
    with FakeModelServer({"c": [step(write_file("d/n.txt", "x"), edit_file("n.txt", "x", "y"))]}) as server:
        _, _, raw = post(server, "/v1/responses", body)
    calls = [e["item"] for e in sse_events(raw) if e["type"] == "response.output_item.done"]
    commands = [json.loads(c["arguments"])["command"] for c in calls]
    assert [c["name"] for c in calls] == ["shell_command", "shell_command"]
    assert commands[0] == "mkdir -p d && printf %s x > d/n.txt"
    assert commands[1].startswith("python3 -c ") and commands[1].endswith(" n.txt x y")


def test_the_step_is_the_number_of_assistant_turns_in_the_history() -> None:
    script = [run("one"), run("two"), text("three")]
    codex_turn = [{"type": "function_call", "call_id": "a", "name": "exec_command", "arguments": "{}"},
                  {"type": "function_call", "call_id": "b", "name": "exec_command", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "a", "output": "ok"},
                  {"type": "function_call_output", "call_id": "b", "output": "ok"}]
    with FakeModelServer({"h": script}) as server:
        post(server, "/v1/messages", claude_body("h", tool_turn(1)))
        post(server, "/v1/messages", claude_body("h", tool_turn(1) + tool_turn(2)))
        post(server, "/v1/responses", codex_body("h", codex_turn))  # two calls in one turn count once
        _, _, raw = post(server, "/v1/messages", claude_body("h", tool_turn(1) + tool_turn(2) + tool_turn(3)))
        assert [r.step for r in server.requests_for("h")] == [1, 2, 1, 3]
        assert "has no step 3" in streamed_text(raw) and server.problems and "has no step 3" in server.problems[0]


@pytest.mark.parametrize(("status", "kind"), [(429, "rate_limit_error"), (401, "authentication_error"),
                                              (500, "api_error"), (529, "overloaded_error")])
def test_anthropic_errors_repeat_on_retry(status: int, kind: str) -> None:
    with FakeModelServer({"x": [error(status, retry_after=2)]}) as server:
        replies = [post(server, "/v1/messages?beta=true", claude_body("x")) for _ in range(2)]
    for got, headers, raw in replies:
        body = json.loads(raw)
        assert got == status and headers["retry-after"] == "2"
        assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"]
    assert server.usage_reported == {}


@pytest.mark.parametrize(("status", "code"), [(429, "rate_limit_exceeded"), (401, "invalid_api_key"), (500, None)])
def test_openai_errors_look_like_the_api(status: int, code: str | None) -> None:
    with FakeModelServer({"x": [error(status)]}) as server:
        got, _, raw = post(server, "/v1/responses", codex_body("x"))
    assert got == status and json.loads(raw)["error"]["code"] == code


def test_stream_errors() -> None:
    with FakeModelServer({"x": [stream_error("overloaded_error", "Overloaded")]}) as server:
        _, _, claude_raw = post(server, "/v1/messages", claude_body("x"))
        _, _, codex_raw = post(server, "/v1/responses", codex_body("x"))
        status, _, fallback = post(server, "/v1/messages", claude_body("x", stream=False))
    overloaded = {"type": "overloaded_error", "message": "Overloaded"}
    assert sse_events(claude_raw)[-1] == {"type": "error", "error": overloaded}
    failed = sse_events(codex_raw)[-1]
    assert failed["type"] == "response.failed" and failed["response"]["error"]["code"] == "overloaded_error"
    assert status == 529 and json.loads(fallback)["error"]["type"] == "overloaded_error"


def test_non_streaming_messages_get_a_json_message() -> None:
    with FakeModelServer({"j": [write_file("a.txt", "x")]}) as server:
        status, headers, raw = post(server, "/v1/messages", claude_body("j", stream=False))
    message = json.loads(raw)
    assert status == 200 and headers["content-type"] == "application/json"
    assert message["stop_reason"] == "tool_use"
    assert message["content"][0]["input"] == {"file_path": "/work/repo/a.txt", "content": "x"}


def test_side_requests_and_auxiliary_endpoints() -> None:
    with FakeModelServer({}) as server:
        side = claude_body("anything")
        del side["tools"]
        _, _, raw = post(server, "/v1/messages", side)
        tokens = post(server, "/v1/messages/count_tokens", claude_body("x"))
        models = get(server, "/v1/models?client_version=0.169.0")
        upgrade = get(server, "/v1/responses", {"connection": "Upgrade", "upgrade": "websocket"})
        unmarked = post(server, "/v1/messages", {**claude_body("x"), "messages": [{"role": "user", "content": "hi"}]})
        unknown = post(server, "/v1/messages", claude_body("nope"))
        problems = server.problems
    assert streamed_text(raw) == "OK"
    assert server.usage_reported[""].responses == 2  # the side query and the unmarked one
    assert tokens[0] == 200 and json.loads(tokens[2])["input_tokens"] > 0
    assert models == (200, {"object": "list", "data": [], "models": []})
    assert upgrade[0] == 404
    assert "no [[script:NAME]] marker" in streamed_text(unmarked[2])
    assert "unknown script 'nope'" in streamed_text(unknown[2])
    assert len(problems) == 2


def test_required_api_key() -> None:
    with FakeModelServer({"k": [text()]}, api_key="right") as server:
        wrong = post(server, "/v1/messages", claude_body("k"), {"x-api-key": "wrong"})
        right = post(server, "/v1/responses", codex_body("k"), {"authorization": "Bearer right"})
    assert wrong[0] == 401 and json.loads(wrong[2])["error"]["type"] == "authentication_error"
    assert right[0] == 200


def test_hang_holds_the_stream_until_the_server_closes() -> None:
    server = FakeModelServer({"h": [hang("partial")]}).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/v1/messages", json.dumps(claude_body("h")), {"content-type": "application/json"})
    response = conn.getresponse()
    seen = b""
    while b"partial" not in seen:
        seen += response.read1(4096)
    assert b"message_start" in seen and b"message_stop" not in seen
    assert server.wait_for(lambda s: [r.reply for r in s.requests] == ["hang"], timeout=2)
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 2
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    conn.close()
    assert server.usage_reported == {}


def test_keepalive_pings_usage_limits_and_scripts_added_later() -> None:
    with FakeModelServer() as server:
        server.add_script("ka", [hang(keepalive=0.05)])
        server.add_script("limit", [usage_limit(600)])
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/v1/messages", json.dumps(claude_body("ka")), {"content-type": "application/json"})
        response = conn.getresponse()
        seen = b""
        while seen.count(b"event: ping") < 3:  # one after message_start, then keep-alive pings
            seen += response.read1(4096)
        status, _, raw = post(server, "/v1/responses", codex_body("limit"))
    conn.close()
    limit = json.loads(raw)["error"]
    assert status == 429 and limit["type"] == "usage_limit_reached" and limit["resets_in_seconds"] == 600
    assert abs(limit["resets_at"] - time.time() - 600) < 5


def test_two_conversations_share_one_server_concurrently() -> None:
    script = [step(run("echo hi"), usage=Usage(10, 1)), step(text("bye"), usage=Usage(20, 2))]
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def converse(key: str, api: str) -> None:
        try:
            barrier.wait(5)
            if api == "anthropic":
                post(server, "/v1/messages", claude_body(key))
                post(server, "/v1/messages", claude_body(key, tool_turn(1)))
            else:
                post(server, "/v1/responses", codex_body(key))
                post(server, "/v1/responses", codex_body(key, [
                    {"type": "function_call", "call_id": "c", "name": "exec_command", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c", "output": "hi"}]))
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    with FakeModelServer({"duo": script}, event_delay=0.01) as server:
        threads = [threading.Thread(target=converse, args=("duo@a", "anthropic")),
                   threading.Thread(target=converse, args=("duo@b", "openai"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        requests = server.requests
    assert not failures
    assert server.usage_reported == {"duo@a": Usage(30, 3, 0, 0, 2), "duo@b": Usage(30, 3, 0, 0, 2)}
    assert sorted((r.key, r.step) for r in requests) == [("duo@a", 0), ("duo@a", 1), ("duo@b", 0), ("duo@b", 1)]
    assert abs(requests[0].at - requests[1].at) < 0.5 and {requests[0].key, requests[1].key} == {"duo@a", "duo@b"}


def test_steps_with_an_error_or_hang_stand_alone() -> None:
    with pytest.raises(ValueError, match="only action"):
        step(error(429), text())
    with pytest.raises(ValueError, match="at least one"):
        Step(())
