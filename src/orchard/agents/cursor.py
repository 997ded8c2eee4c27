"""Cursor's headless CLI (`cursor-agent -p --output-format stream-json --trust --force -- PROMPT`).

The prompt is the last argv item, after `--` (Cursor documents no prompt on stdin in print mode): one argument,
never a shell string; a prompt over 100 KB is replaced by a pointer to orchard's prompt file. Reads `system/init`
(session, model), `tool_call` events as activity, assistant text, and the terminal `result`. A failure exits
non-zero with its message on stderr, usually without a result. Cursor reports no cost (recorded as 0); newer builds
put tokens in the result's `usage`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from orchard.agents.base import AttemptContext, AttemptReport, ExitInfo, Invocation, JsonLineParser, Stream, TailBuffer
from orchard.agents.claude import WIDTH, agent_env, describe_tool
from orchard.agents.errors import classify_error, resume_at
from orchard.core.model import Outcome

BINARY = "cursor-agent"
ARGV_PROMPT_LIMIT = 100_000  # Linux caps one argument at 128 KiB
# Cursor's own tool kinds (`tool_call.<kind>ToolCall`) as the names other adapters show
TOOL_NAMES = {"read": "Read", "write": "Write", "edit": "Edit", "shell": "Bash", "bash": "Bash", "grep": "Grep",
              "ls": "List", "glob": "Glob", "delete": "Delete", "todo": "Todo", "updateTodos": "Todo"}
# errors of Cursor's backend (Connect RPC codes, HTTP 5xx) rather than of the agent's work
_API = re.compile(r"ConnectError|\[(?:unavailable|internal|unknown|deadline_exceeded|aborted)\]"
                  r"|(?:HTTP|status)[ :]*5\d\d|internal server error|service unavailable|network error|ECONNRESET"
                  r"|ETIMEDOUT", re.IGNORECASE)
_UNTRUSTED = re.compile(r"workspace trust|pass --trust", re.IGNORECASE)


def tool_activity(tool_call: dict[str, Any], root: str) -> str:
    """`Write notes.txt`, `Bash: pytest -q`, `codebase_search greeting` from a `tool_call` payload."""
    for key, value in tool_call.items():
        if not isinstance(value, dict):
            continue
        if key == "function":  # the generic form: {"function": {"name": …, "arguments": "<JSON text>"}}
            return describe_tool(str(value.get("name") or "tool"), _arguments(value.get("arguments")), root)
        kind = key.removesuffix("ToolCall")
        args = value.get("args")
        return describe_tool(TOOL_NAMES.get(kind, kind), args if isinstance(args, dict) else {}, root)
    return "tool"


def _arguments(raw: Any) -> dict[str, Any]:
    """A function call's arguments: a JSON object, or JSON text of one."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _count(usage: dict[str, Any], *names: str) -> int:
    """The first of `names` (camelCase as Cursor spells them, or snake_case) present in `usage`, as an int."""
    for name in names:
        value = usage.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return 0


class CursorParser(JsonLineParser):
    """Per-attempt state over Cursor's stream-json lines."""

    def __init__(self, worktree: str) -> None:
        super().__init__()
        self.root = worktree
        self.session_id: str | None = None
        self.model: str | None = None
        self.result: dict[str, Any] | None = None
        self.stderr = TailBuffer()  # Cursor's failures are told here, apart from what the agent said

    def feed(self, line: str, stream: Stream) -> str | None:
        if stream == "stderr":
            self.stderr.add(line)
        data = self.event(line, stream)
        if data is None:
            return None
        kind = data.get("type")
        if kind == "system" and data.get("subtype") == "init":
            self.session_id, self.model = data.get("session_id") or self.session_id, data.get("model")
            return f"session started ({self.model})" if self.model else "session started"
        if kind == "assistant":
            return self._assistant(data.get("message") or {})
        if kind == "tool_call" and data.get("subtype") == "started":
            tool_call = data.get("tool_call")
            return tool_activity(tool_call, self.root) if isinstance(tool_call, dict) else None
        if kind == "result":
            self.result = data
            self.session_id = data.get("session_id") or self.session_id
        return None

    def _assistant(self, message: dict[str, Any]) -> str | None:
        texts = [str(item.get("text", "")).strip() for item in message.get("content") or []
                 if isinstance(item, dict) and item.get("type") == "text"]
        text = "\n".join(t for t in texts if t)
        if not text:
            return None
        self.tail.add(text)
        return text.splitlines()[0][:WIDTH]

    def finish(self, exit: ExitInfo) -> AttemptReport:
        if failed := self.process_failure(exit):
            return self._report(failed.outcome, failed.detail)
        r = self.result
        if r is not None and (r.get("is_error") or str(r.get("subtype") or "success") != "success"):
            return self._failure(str(r.get("result") or r.get("error") or self._said() or r.get("subtype")))
        if exit.returncode != 0:
            return self._failure(self._said() or "no output", exit.returncode)
        if r is None:
            said = self._said()
            why = "the workspace is not trusted" if _UNTRUSTED.search(said) else "no result event"
            return self._report(Outcome.AGENT_ERROR, f"{why} (exit 0): {said or 'no output'}"[:500])
        text = str(r.get("result") or "").strip()
        return self._report(Outcome.SUCCESS, text.splitlines()[0][:WIDTH] if text else "")

    def _said(self) -> str:
        """What explains a failure: Cursor's stderr, else the last output lines."""
        return self.stderr.text(3) or self.tail.text(3)

    def _failure(self, text: str, returncode: int | None = None) -> AttemptReport:
        outcome = classify_error(text)
        if outcome is Outcome.AGENT_ERROR and _API.search(text):
            outcome = Outcome.API_ERROR
        if outcome is Outcome.AGENT_ERROR and returncode is not None:
            text = f"exited with code {returncode}: {text}"
        return self._report(outcome, text[:500], resume_at(outcome, text))

    def _report(self, outcome: Outcome, detail: str, resume_at: float | None = None) -> AttemptReport:
        """The verdict with the tokens of the result's `usage`, when Cursor gave one; cost is always 0."""
        usage = (self.result or {}).get("usage")
        usage = usage if isinstance(usage, dict) else {}
        # counted apart as in Anthropic's usage; orchard's tokens_in is every input token
        tokens_in = (_count(usage, "inputTokens", "input_tokens")
                     + _count(usage, "cacheReadTokens", "cache_read_tokens")
                     + _count(usage, "cacheWriteTokens", "cache_write_tokens"))
        tokens_out = _count(usage, "outputTokens", "output_tokens")
        summary = str((self.result or {}).get("result") or "") if outcome is Outcome.SUCCESS else ""
        return AttemptReport(outcome, detail, tokens_in, tokens_out, 0.0, self.session_id, resume_at, summary)


class CursorAdapter:
    """Adapter for `type: cursor`."""

    kind = "cursor"

    def invocation(self, ctx: AttemptContext) -> Invocation:
        o = ctx.agent.option
        resume = bool(o("resume_session", True)) and ctx.session_id and ctx.feedback
        prompt = ctx.feedback if resume else ctx.prompt
        if len(prompt.encode()) > ARGV_PROMPT_LIMIT:  # too long for one argument: the full prompt, from its file
            resume, prompt = False, (f"Your task is in the file {ctx.prompt_file} (outside this workspace). "
                                     "Read all of it and carry it out.")
        # every orchard worktree is new to Cursor, which refuses an untrusted folder in print mode (and exits 0)
        argv = [str(o("binary", BINARY)), "-p", "--output-format", "stream-json", "--trust"]
        if o("force", True):
            argv.append("--force")  # run commands and write files without asking, as the other kinds' defaults do
        if o("model"):
            argv += ["--model", str(o("model"))]
        if resume:
            argv += ["--resume", str(ctx.session_id)]
        argv += [str(a) for a in o("args", ()) or ()]
        argv += ["--", prompt]
        return Invocation(tuple(argv), ctx.worktree, agent_env(ctx), None)

    def parser(self, ctx: AttemptContext) -> CursorParser:
        return CursorParser(str(ctx.worktree))
