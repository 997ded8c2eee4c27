"""Run the real `gemini` CLI offline: its hidden `--fake-responses FILE` hook, settings, env, argv. Stdlib only.

Verified with Gemini CLI 0.61.0 (pinned in tools/agents/package.json; `tools/install-agents.sh` puts it in
`.tools/agents/node_modules/.bin/gemini`) on Node 20:

    cwd = the repository, prompt in `-p` (stdin empty or /dev/null; any stdin text comes first, then "\\n\\n\\n" + -p),
    env  GEMINI_API_KEY=test-key GEMINI_CLI_HOME=<home> GEMINI_CLI_TRUST_WORKSPACE=true GEMINI_CLI_NO_RELAUNCH=true
         TMPDIR=<home>/tmp                                      (gemini_env; no GEMINI_*/GOOGLE_* from the caller)
    argv gemini -p PROMPT --output-format stream-json --approval-mode yolo -m gemini-2.5-flash --fake-responses FILE
    <home>/.gemini/settings.json (write_gemini_settings):
         {"general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false, "maxAttempts": 1},
          "privacy": {"usageStatisticsEnabled": false}, "telemetry": {"enabled": false},
          "model": {"name": "gemini-2.5-flash", "skipNextSpeakerCheck": true},
          "tools": {"useRipgrep": false, "disableLLMCorrection": true}}

Why each piece:

- No network at all with the above (checked with strace: no DNS lookup, no connect). Without
  `privacy.usageStatisticsEnabled: false` it resolves the usage-statistics host at startup and probes the machine
  (lspci, clinfo, xrandr). No update check was seen in headless runs; the auto-update settings make sure of it.
- `GEMINI_CLI_HOME` relocates `~/.gemini` (settings, sessions for `--resume`, installation id, projects.json) to
  `<home>/.gemini`. Even `gemini --version` writes there.
- The worktree is an untrusted folder: without `GEMINI_CLI_TRUST_WORKSPACE=true` (or `--skip-trust`) gemini prints
  "Gemini CLI is not running in a trusted directory…" on stderr, nothing on stdout, and exits 55.
- A concrete model (`-m` or `model.name`): the default `auto` first asks a routing classifier (a `generateContent`
  call), which would take a line of the strict fake file. `model.skipNextSpeakerCheck` and
  `tools.disableLLMCorrection` remove the other side calls to the model (next-speaker check; the edit fixer when
  `old_string` does not match).
- `GEMINI_CLI_NO_RELAUNCH=true`: no second node process (gemini otherwise re-executes itself with a bigger heap);
  about 1 s faster per run. `TMPDIR`: API errors also write `gemini-client-error-*.json` reports to the temp dir.
- `general.maxAttempts: 1`: an HTTP error (GeminiErrorServer) fails at once instead of after backoff retries.
- `GEMINI_API_KEY` is required even with `--fake-responses` (which never sends it anywhere): without it, exit 41,
  empty stdout, "Please set an Auth method in your <home>/.gemini/settings.json or specify …" on stderr. With
  `GOOGLE_GEMINI_BASE_URL` set, 0.61.0 also needs `security.auth.selectedType: "gemini-api-key"` (else exit 41,
  "Invalid auth method selected.").

`--fake-responses FILE` (strict): one JSON line per model call, in order, `{"method": "generateContentStream",
"response": [<GenerateContentResponse>, …]}`; no HTTP is involved. A missing line ends the run with a `result` of
status `error` whose message is "No more mock responses for generateContentStream, got request: <the whole request>"
(tens of KB). `result.stats` sums the responses' `usageMetadata`: `input_tokens` = promptTokenCount (cached
included), `cached` = cachedContentTokenCount, `input` = the difference, `output_tokens` = candidatesTokenCount
(thoughtsTokenCount is not included), `total_tokens` = totalTokenCount.

The file cannot express an HTTP status (it is JSON only): `broken_response()` is the error it can produce (exit 1,
result status `error`, "[API Error: Unexpected response type, next response was for generateContent but expected
generateContentStream]"). For a real 429/401/500, point `GOOGLE_GEMINI_BASE_URL` at a `GeminiErrorServer`: gemini
exits with the HTTP status modulo 256 (429 → 173, 401 → 145, 403 → 147, 500 → 244).

    script = [write_file("notes.txt", "hi\\n"), edit_file("notes.txt", "hi", "hello"), run("cat notes.txt"), text()]
    fake = write_fake_responses(tmp / "fake.jsonl", script)          # shared vocabulary: orchard.testing.script
    env = gemini_env(tmp / "home")
    result = run_agent(gemini_argv(binary, "Write notes.txt", fake_responses=fake), repo, env, prompt="")
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from orchard.testing.agents import TEST_KEY, clean_environ
from orchard.testing.script import (
    Action,
    EditFile,
    Fail,
    Hang,
    Run,
    Script,
    Step,
    StreamFail,
    Text,
    Usage,
    WriteFile,
    as_steps,
)

GEMINI_VERSION = "0.61.0"
GEMINI_MODEL = "gemini-2.5-flash"
GEMINI_INSTALL_HINT = "run `bash tools/install-agents.sh` (pinned gemini, claude and codex into .tools/agents)"
DEFAULT_USAGE = Usage(input_tokens=1000, output_tokens=50)
GEMINI_LEAKY_PREFIXES = ("GEMINI_", "GOOGLE_", "CLOUD_SHELL")
BROKEN_MESSAGE = "Unexpected response type, next response was for generateContent but expected generateContentStream"
EDIT_INSTRUCTION = "Replace the text as asked."
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
STATUS_MESSAGES = {400: "API key not valid. Please pass a valid API key.",
                   401: "Request had invalid authentication credentials.",
                   403: "The caller does not have permission", 404: "models/unknown is not found",
                   429: "Resource has been exhausted (e.g. check quota).", 500: "Internal error encountered.",
                   503: "The model is overloaded. Please try again later."}


@dataclass(frozen=True)
class BrokenResponse(Action):
    """A fake-responses line for the wrong method: gemini's fake generator throws; the turn ends in an error."""


def broken_response() -> BrokenResponse:
    """The one error `--fake-responses` can produce: exit 1, result status `error`, `[API Error: Unexpected …]`."""
    return BrokenResponse()


def _part(action: Action) -> dict[str, Any]:
    """One `parts` entry of a model response."""
    if isinstance(action, Text):
        return {"text": action.text}
    if isinstance(action, WriteFile):  # gemini's write_file overwrites without reading first: read_first is moot
        return {"functionCall": {"name": "write_file", "args": {"file_path": action.path, "content": action.content}}}
    if isinstance(action, EditFile):
        args = {"file_path": action.path, "instruction": EDIT_INSTRUCTION, "old_string": action.old,
                "new_string": action.new}
        return {"functionCall": {"name": "replace", "args": args}}
    if isinstance(action, Run):
        return {"functionCall": {"name": "run_shell_command",
                                 "args": {"command": action.command, "description": action.description}}}
    if isinstance(action, (Fail, StreamFail, Hang)):
        raise ValueError(f"--fake-responses cannot express {action!r} (no HTTP, no streaming delays): use "
                         "broken_response(), or GeminiErrorServer for an HTTP status")
    raise ValueError(f"no gemini equivalent for {action!r}")


def usage_metadata(usage: Usage) -> dict[str, int]:
    """Gemini's `usageMetadata` for a step: input → promptTokenCount (cache reads are part of it), output →
    candidatesTokenCount."""
    meta = {"promptTokenCount": usage.input_tokens, "candidatesTokenCount": usage.output_tokens,
            "totalTokenCount": usage.input_tokens + usage.output_tokens}
    if usage.cache_read_input_tokens:
        meta["cachedContentTokenCount"] = usage.cache_read_input_tokens
    return meta


def fake_response(step: Step, usage: Usage = DEFAULT_USAGE) -> dict[str, Any]:
    """One `--fake-responses` line for `step`: a single streamed chunk with its parts, STOP and `usage`."""
    if any(isinstance(a, BrokenResponse) for a in step.actions):
        if len(step.actions) > 1:
            raise ValueError("broken_response() must be the only action of its step")
        return {"method": "generateContent", "response": {}}
    candidate = {"content": {"role": "model", "parts": [_part(a) for a in step.actions]}, "finishReason": "STOP",
                 "index": 0}
    return {"method": "generateContentStream",
            "response": [{"candidates": [candidate], "usageMetadata": usage_metadata(step.usage or usage)}]}


def fake_responses(script: Script, *, usage: Usage = DEFAULT_USAGE) -> list[dict[str, Any]]:
    """The fake-responses lines for `script` (steps or bare actions, as for FakeModelServer)."""
    return [fake_response(step, usage) for step in as_steps(script)]


def write_fake_responses(path: Path | str, script: Script, *, usage: Usage = DEFAULT_USAGE) -> Path:
    """Write `script` as a `--fake-responses` JSONL file at `path` (parents created); return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(json.dumps(line) + "\n" for line in fake_responses(script, usage=usage)))
    return target


def script_usage(script: Script, *, usage: Usage = DEFAULT_USAGE) -> Usage:
    """What gemini's `result.stats` adds up when the whole script is played (a broken response reports none):
    input_tokens, output_tokens, and `cached` as cache_read_input_tokens."""
    total = Usage()
    for step in as_steps(script):
        if not any(isinstance(a, BrokenResponse) for a in step.actions):
            total += step.usage or usage
    return total


def gemini_settings(*, model: str = GEMINI_MODEL, max_session_turns: int | None = None, max_attempts: int = 1,
                    api_key_auth: bool = False) -> dict[str, Any]:
    """settings.json for offline, deterministic runs (see the module docstring for what each key avoids)."""
    settings: dict[str, Any] = {
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False, "maxAttempts": max_attempts},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "model": {"name": model, "skipNextSpeakerCheck": True},
        "tools": {"useRipgrep": False, "disableLLMCorrection": True},
    }
    if max_session_turns is not None:  # exit 53 and FatalTurnLimitedError once reached
        settings["model"]["maxSessionTurns"] = max_session_turns
    if api_key_auth:  # needed with GOOGLE_GEMINI_BASE_URL in 0.61.0
        settings["security"] = {"auth": {"selectedType": "gemini-api-key"}}
    return settings


def write_gemini_settings(home: Path | str, **options: Any) -> Path:
    """Write `gemini_settings(**options)` to `<home>/.gemini/settings.json` (GEMINI_CLI_HOME=home); return its path."""
    path = Path(home) / ".gemini" / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(gemini_settings(**options), indent=2) + "\n")
    return path


def gemini_env(home: Path | str, *, api_key: str = TEST_KEY, base_url: str | None = None, model: str = GEMINI_MODEL,
               max_session_turns: int | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the real `gemini` with its home in `home` (settings.json written there), offline.

    `base` (default os.environ) loses every real key, endpoint and agent variable first; `base={}` gives only the
    variables to add (for a plan's agent `env`). `base_url` points gemini at a GeminiErrorServer instead."""
    home = Path(home)
    write_gemini_settings(home, model=model, max_session_turns=max_session_turns, api_key_auth=base_url is not None)
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    cleaned = {k: v for k, v in clean_environ(base).items() if not k.startswith(GEMINI_LEAKY_PREFIXES)}
    env = {**cleaned, "GEMINI_API_KEY": api_key, "GEMINI_CLI_HOME": str(home), "GEMINI_CLI_TRUST_WORKSPACE": "true",
           "GEMINI_CLI_NO_RELAUNCH": "true", "TMPDIR": str(home / "tmp")}
    if base_url is not None:
        env["GOOGLE_GEMINI_BASE_URL"] = base_url
    return env


def gemini_argv(binary: Path | str, prompt: str, *, fake_responses: Path | str | None = None,
                model: str | None = GEMINI_MODEL, approval_mode: str = "yolo", extra: Sequence[str] = ()) -> list[str]:
    """`gemini -p PROMPT --output-format stream-json --approval-mode yolo -m M [--fake-responses F]`, the order
    orchard's GeminiAdapter uses."""
    argv = [str(binary), "-p", prompt, "--output-format", "stream-json", "--approval-mode", approval_mode]
    if model:
        argv += ["-m", model]
    if fake_responses is not None:
        argv += ["--fake-responses", str(fake_responses)]
    return [*argv, *extra]


def google_error(status: int, message: str | None = None, *, retry_delay: str | None = None) -> dict[str, Any]:
    """A Google API error body: `{"error": {"code", "message", "status", "details"}}` (RetryInfo if `retry_delay`)."""
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}] if retry_delay else []
    return {"error": {"code": status, "message": message or STATUS_MESSAGES.get(status, f"HTTP {status}"),
                      "status": STATUS_NAMES.get(status, "UNKNOWN"), "details": details}}


class _ErrorHandler(BaseHTTPRequestHandler):
    server: _ErrorHTTPServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        owner = self.server.owner
        payload = json.dumps(owner.body).encode()
        with owner.lock:
            owner.requests.append(f"{self.command} {self.path} -> {owner.status}")
        self.send_response(owner.status)
        self.send_header("content-type", "application/json; charset=UTF-8")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _ErrorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: GeminiErrorServer


class GeminiErrorServer:
    """Loopback HTTP server answering every request with one Google API error, for `GOOGLE_GEMINI_BASE_URL`.

    gemini calls `POST {base}/v1beta/models/{model}:streamGenerateContent?alt=sse`; `requests` lists what it saw."""

    def __init__(self, status: int = 429, message: str | None = None, *, retry_delay: str | None = None,
                 body: Mapping[str, Any] | None = None) -> None:
        self.status = status
        self.body = dict(body) if body is not None else google_error(status, message, retry_delay=retry_delay)
        self.lock = threading.Lock()
        self.requests: list[str] = []
        self._httpd: _ErrorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT` for GOOGLE_GEMINI_BASE_URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GeminiErrorServer:
        """Bind 127.0.0.1 on a free port and serve in a background thread."""
        httpd = _ErrorHTTPServer(("127.0.0.1", 0), _ErrorHandler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="gemini-error-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> GeminiErrorServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
