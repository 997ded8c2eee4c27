"""A scripted fake model server on loopback speaking Anthropic Messages, OpenAI Responses and OpenAI Chat Completions,
for offline agent tests.

    scripts = {"edit": [write_file("a.txt", "hi\\n"), run("cat a.txt"), text("Done.")]}
    with FakeModelServer(scripts) as server:       # 127.0.0.1, port 0, background thread, clean shutdown
        ... run `claude` or `codex` with a prompt containing "[[script:edit]]" (see orchard.testing.agents) ...
        server.requests, server.usage_reported["edit"], server.problems

A conversation is named by the `[[script:KEY]]` marker in its first user message (`KEY` = `NAME` or `NAME@tag` to run
one script in several conversations at once). The server keeps no conversation state: the step it plays is the number
of assistant turns already in the request's history, so a retried request gets the same step again (a scripted 429
stays a 429) and a resumed session carries on with the next step. Requests without tools (title generation and
other side queries) get a short text and count under the key "". Usage is counted when a response completes.
Endpoints: `POST /v1/messages[?beta=true]` (SSE or JSON), `POST /v1/messages/count_tokens`, `POST /v1/responses`,
`POST /v1/chat/completions` (aider; steps become edit-format text, see orchard.testing.chat), `GET /v1/models`
(`{"models": []}`); the WebSocket upgrade `GET /v1/responses` gets a 404, so Codex falls back to
HTTP (or configure its provider with `supports_websockets=false`, as `codex_provider_args` does).
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from orchard.testing import anthropic, chat, openai
from orchard.testing.script import Fail, Hang, Script, Step, StreamFail, Text, Usage, as_steps
from orchard.testing.wire import Conversation, Dialect, Event, sse

DEFAULT_USAGE = Usage(input_tokens=1000, output_tokens=50)
SIDE_USAGE = Usage(input_tokens=20, output_tokens=5)


@dataclass
class RecordedRequest:
    """One request as received, and how the server answered it (`status`, `reply`) once it has."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    api: str | None = None
    key: str | None = None
    step: int | None = None
    status: int | None = None
    reply: str = ""
    at: float = field(default_factory=time.monotonic)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its FakeModelServer (which joins the handler threads itself, with a deadline)."""

    daemon_threads = True
    block_on_close = False
    owner: FakeModelServer


class FakeModelServer:
    """Scripted model server: `scripts` maps a script name to its steps; see the module docstring."""

    def __init__(self, scripts: Mapping[str, Script] | None = None, *, usage: Usage = DEFAULT_USAGE,
                 side_text: str = "OK", api_key: str | None = None, event_delay: float = 0.0,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        """Scripts by name, default per-step usage, optional required API key, pause between SSE events."""
        self._scripts = {name: as_steps(steps) for name, steps in (scripts or {}).items()}
        self.default_usage, self.side_text, self.api_key, self.event_delay = usage, side_text, api_key, event_delay
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._usage: dict[str, Usage] = {}
        self._problems: list[str] = []
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._ids = itertools.count(1)
        self.stopping = threading.Event()
        self.host = host
        self._httpd = _Server((host, port), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    def start(self) -> FakeModelServer:
        """Serve in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="fake-model-server", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, release hung streams and idle keep-alive connections, join the threads (5 s at most)."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        deadline = time.monotonic() + 5
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
        with self._lock:
            connections = list(self._connections.items())
        for conn, _ in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._httpd.server_close()

    def __enter__(self) -> FakeModelServer:
        """Start and return the server."""
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        """Close the server."""
        self.close()

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT` (Claude's ANTHROPIC_BASE_URL)."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """`http://127.0.0.1:PORT/v1` (a Codex provider's base_url)."""
        return f"{self.base_url}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, key: str) -> list[RecordedRequest]:
        """The model requests of one conversation key."""
        return [r for r in self.requests if r.key == key]

    @property
    def usage_reported(self) -> dict[str, Usage]:
        """Tokens reported per conversation key in completed responses (`responses` counts them)."""
        with self._lock:
            return dict(self._usage)

    @property
    def problems(self) -> list[str]:
        """Requests the scripts did not foresee (no marker, unknown script, script exhausted, bad JSON …)."""
        with self._lock:
            return list(self._problems)

    def add_script(self, name: str, script: Script) -> None:
        """Add or replace a script while serving."""
        steps = as_steps(script)
        with self._lock:
            self._scripts[name] = steps

    def recover_when_paused(self, name: str, script: Script) -> StatusWatcher:
        """An orchard event observer that swaps in `script` for `name` once a task is paused: the provider's limit
        resets. Its `.seen` lists the task statuses it saw."""
        return StatusWatcher(self, name, script)

    def wait_for(self, condition: Callable[[FakeModelServer], bool], timeout: float = 10.0) -> bool:
        """Poll `condition(self)` until true or `timeout` seconds pass; returns the last result."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _record(self, request: RecordedRequest) -> None:
        """Keep a request."""
        with self._lock:
            self._requests.append(request)

    def _problem(self, text: str) -> None:
        """Note something a script did not foresee."""
        with self._lock:
            self._problems.append(text)

    def _count(self, key: str | None, usage: Usage) -> None:
        """Add a completed response's usage to its conversation."""
        with self._lock:
            self._usage[key or ""] = self._usage.get(key or "", Usage()) + replace(usage, responses=1)

    def _connection(self, conn: socket.socket, add: bool) -> None:
        """Track open client connections and their threads (shut down and joined on close)."""
        with self._lock:
            if add:
                self._connections[conn] = threading.current_thread()
            else:
                self._connections.pop(conn, None)

    def next_id(self) -> int:
        """A fresh number for message, response and request ids."""
        return next(self._ids)

    def choose(self, conv: Conversation, request: RecordedRequest) -> tuple[Step, Usage]:
        """The step to play for a request, and its usage; a short text for side queries and unforeseen requests."""
        request.key, request.step = conv.key, conv.turns
        if conv.side:
            return Step((Text(self.side_text),)), SIDE_USAGE
        with self._lock:
            steps = self._scripts.get(conv.script_name or "")
        if conv.key is None:
            problem = "no [[script:NAME]] marker in the conversation"
        elif steps is None:
            problem = f"unknown script {conv.script_name!r}"
        elif conv.turns >= len(steps):
            problem = f"script {conv.key!r} has no step {conv.turns} (it has {len(steps)})"
        else:
            chosen = steps[conv.turns]
            return chosen, chosen.usage or self.default_usage
        self._problem(f"{request.method} {request.path}: {problem}")
        return Step((Text(f"[fake model server] {problem}"),)), self.default_usage


class _Handler(BaseHTTPRequestHandler):
    """Routes one connection's requests to the Anthropic or OpenAI dialect."""

    protocol_version = "HTTP/1.1"
    server: _Server

    @property
    def owner(self) -> FakeModelServer:
        """The FakeModelServer this handler serves."""
        return self.server.owner

    def setup(self) -> None:
        """Track the connection."""
        super().setup()
        self.owner._connection(self.connection, True)

    def finish(self) -> None:
        """Untrack the connection."""
        try:
            super().finish()
        finally:
            self.owner._connection(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `server.requests` instead."""

    def handle_one_request(self) -> None:
        """Serve one request; a client that went away is not an error."""
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        """The request body (Content-Length or chunked; gzip-decoded)."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            data = self.rfile.read(int(self.headers.get("content-length") or 0))
        return gzip.decompress(data) if self.headers.get("content-encoding", "").lower() == "gzip" else data

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        """A complete JSON response."""
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _open_stream(self, headers: Mapping[str, str]) -> None:
        """200 with `text/event-stream`, chunked, so events can be flushed one by one (and left unfinished)."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        """Write one HTTP chunk (empty data ends the body)."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _events(self, events: list[Event]) -> None:
        """Flush SSE events one per chunk, pausing `event_delay` between them."""
        for name, data in events:
            self._chunk(sse(name, data))
            if self.owner.event_delay:
                time.sleep(self.owner.event_delay)

    def _hold(self, keepalive: float | None) -> None:
        """Keep a hung stream open until the server closes or the client goes away (pinging if asked)."""
        last = time.monotonic()
        self.close_connection = True
        while not self.owner.stopping.wait(0.1):
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable and not self.connection.recv(1, socket.MSG_PEEK):
                return
            if keepalive and time.monotonic() - last >= keepalive:
                self._chunk(sse("ping", {"type": "ping"}))
                last = time.monotonic()

    def do_GET(self) -> None:
        """`/v1/models` → `{"models": []}`; anything else (including the Responses WebSocket upgrade) → 404."""
        path = self.path.split("?", 1)[0]
        request = RecordedRequest("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, None)
        self.owner._record(request)
        if path.rstrip("/").endswith("/models"):
            request.status, request.reply = 200, "models"
            self._send_json(200, {"object": "list", "data": [], "models": []})
        else:
            request.status, request.reply = 404, "not found"
            self._send_json(404, {"error": {"message": f"no route for GET {path}", "type": "invalid_request_error",
                                            "param": None, "code": "not_found"}})

    def do_POST(self) -> None:
        """Model requests, count_tokens, or 404."""
        path = self.path.split("?", 1)[0].rstrip("/")
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        request = RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        self.owner._record(request)
        if not isinstance(body, dict):
            self.owner._problem(f"POST {self.path}: body is not a JSON object")
            request.status, request.reply = 400, "bad json"
            self._send_json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad JSON"}})
        elif path.endswith("/messages/count_tokens"):
            request.api, request.status, request.reply = "anthropic", 200, "count_tokens"
            self._send_json(200, anthropic.count_tokens(body))
        elif path.endswith("/messages"):
            request.api = "anthropic"
            self._model(anthropic, body, request)
        elif path.endswith("/responses"):
            request.api = "openai"
            self._model(openai, body, request)
        elif path.endswith("/chat/completions"):
            request.api = "chat"
            self._model(chat, body, request)
        else:
            request.status, request.reply = 404, "not found"
            self._send_json(404, {"error": {"message": f"no route for POST {path}", "type": "not_found_error"}})

    def _authorized(self, request: RecordedRequest) -> bool:
        """Whether the request carries the required API key (always, when none is required)."""
        wanted = self.owner.api_key
        given = {request.headers.get("x-api-key"), request.headers.get("authorization", "").removeprefix("Bearer ")}
        return wanted is None or wanted in given

    def _model(self, dialect: Dialect, body: dict[str, Any], request: RecordedRequest) -> None:
        """Answer a model request: scripted error, stream failure, hang, or the step's SSE / JSON reply."""
        conv = dialect.conversation(body)
        n = self.owner.next_id()
        reply_id, headers = f"{dialect.REPLY_ID}_{n:04d}", {dialect.REQUEST_ID_HEADER: f"req_fake_{n:04d}"}
        if body.get("previous_response_id"):
            self.owner._problem(f"POST {self.path}: previous_response_id is not supported (the history is counted)")
        step, usage = self.owner.choose(conv, request)
        special = Fail(401) if not self._authorized(request) else step.special
        if not conv.stream and isinstance(special, StreamFail):
            special = Fail(dialect.STREAM_FAIL_STATUS, special.message, error_type=special.error_type)
        if isinstance(special, Fail):
            default = dialect.error_body(special, conv, headers[dialect.REQUEST_ID_HEADER])
            payload = special.body if special.body is not None else default
            request.status, request.reply = special.status, f"error {special.status}"
            self._send_json(special.status, payload, {**headers, **special.headers})
            return
        if not conv.stream and isinstance(special, Hang):
            request.reply = "hang"
            self._hold(None)
            return
        if not conv.stream:
            request.status, request.reply = 200, "json"
            self._send_json(200, dialect.reply_json(step, conv, usage, reply_id), headers)
            self.owner._count(conv.key, usage)
            return
        self._open_stream(headers)
        request.status = 200
        if isinstance(special, StreamFail):
            request.reply = f"stream error {special.error_type}"
            self._events(dialect.stream_fail_events(conv, usage, reply_id, special.error_type, special.message))
        elif isinstance(special, Hang):
            request.reply = "hang"
            self._events(dialect.hang_events(conv, usage, reply_id, special.text))
            self._hold(special.keepalive)
            return
        else:
            request.reply = "stream"
            self._events(dialect.stream_events(step, conv, usage, reply_id))
            self.owner._count(conv.key, usage)
        self._chunk(b"")


class StatusWatcher:
    """See `FakeModelServer.recover_when_paused`."""

    def __init__(self, server: FakeModelServer, name: str, script: Script) -> None:
        self.server, self.name, self.script = server, name, script
        self.seen: list[str] = []

    def __call__(self, event: object) -> None:
        if getattr(event, "type", None) == "task.status":
            self.seen.append(str(getattr(event, "status", "")))
            if self.seen[-1] == "paused":
                self.server.add_script(self.name, self.script)
