"""Claude Code (`claude -p --output-format stream-json --verbose`), prompt on stdin.

Reads `system/init` (session, model), assistant tool uses as activity, `system/api_retry`, and the `result` line.
Success only when a result line says so and the exit code is 0; API errors come as `is_error: true`.
"""

from __future__ import annotations

from typing import Any

from orchard.agents.base import (
    AttemptContext,
    AttemptReport,
    ExitInfo,
    Invocation,
    JsonLineParser,
    Stream,
    orchard_env,
)
from orchard.agents.errors import classify_error, resume_at
from orchard.core.model import Outcome

WIDTH = 120


def agent_env(ctx: AttemptContext) -> dict[str, str]:
    """The entry's `env` plus orchard's variables."""
    env = {str(k): str(v) for k, v in dict(ctx.agent.option("env", {}) or {}).items()}
    return {**env, **orchard_env(ctx)}


def describe_tool(name: str, data: dict[str, Any], root: str) -> str:
    """`Edit src/x.py`, `Bash: pytest -q`, `Read README.md` from a tool use."""
    path = data.get("file_path") or data.get("path") or data.get("notebook_path")
    if isinstance(path, str):
        return f"{name} {path.removeprefix(root.rstrip('/') + '/')}"[:WIDTH]
    command = data.get("command") or data.get("cmd")
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    if isinstance(command, str):
        return f"{name}: {command.strip().splitlines()[0] if command.strip() else ''}"[:WIDTH]
    pattern = data.get("pattern") or data.get("query") or data.get("description")
    return f"{name} {pattern}"[:WIDTH] if isinstance(pattern, str) else name


class ClaudeParser(JsonLineParser):
    """Per-attempt state over Claude's stream-json lines."""

    def __init__(self, worktree: str) -> None:
        super().__init__()
        self.root = worktree
        self.session_id: str | None = None
        self.model: str | None = None
        self.result: dict[str, Any] | None = None

    def feed(self, line: str, stream: Stream) -> str | None:
        data = self.event(line, stream)
        if data is None:
            return None
        kind = data.get("type")
        if kind == "system":
            return self._system(data)
        if kind == "assistant":
            return self._assistant(data)
        if kind == "result":
            self.result = data
            self.session_id = data.get("session_id") or self.session_id
        return None

    def _system(self, data: dict[str, Any]) -> str | None:
        if data.get("subtype") == "init":
            self.session_id, self.model = data.get("session_id"), data.get("model")
            return f"session started ({self.model})" if self.model else "session started"
        if data.get("subtype") == "api_retry":
            return (f"API retry {data.get('attempt')}/{data.get('max_retries')}: "
                    f"{data.get('error_status')} {data.get('error', '')}").strip()
        return None

    def _assistant(self, data: dict[str, Any]) -> str | None:
        message = data.get("message") or {}
        activity = None
        for item in message.get("content") or []:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "tool_use":
                activity = describe_tool(str(item.get("name", "tool")), item.get("input") or {}, self.root)
            elif item.get("type") == "text" and str(item.get("text", "")).strip():
                text = str(item["text"]).strip()
                self.tail.add(text)
                activity = activity or text.splitlines()[0][:WIDTH]
        return activity

    def finish(self, exit: ExitInfo) -> AttemptReport:
        if failed := self.process_failure(exit):
            return self._with_usage(failed.outcome, failed.detail)
        if self.result is None:
            return self._with_usage(Outcome.AGENT_ERROR, f"no result line (exit {exit.returncode}): "
                                    f"{self.tail.text(3) or 'no output'}")
        return self._from_result(self.result, exit.returncode)

    def _from_result(self, r: dict[str, Any], returncode: int | None) -> AttemptReport:
        subtype, text = str(r.get("subtype", "")), str(r.get("result") or "")
        status = r.get("api_error_status") if isinstance(r.get("api_error_status"), int) else None
        if subtype == "error_max_turns":
            errors = r.get("errors") if isinstance(r.get("errors"), list) else []
            return self._with_usage(Outcome.MAX_TURNS, str(errors[0]) if errors else "reached the maximum turns")
        if subtype == "error_max_budget_usd":
            return self._with_usage(Outcome.AGENT_ERROR, "reached the task's remaining budget")
        if r.get("is_error") or subtype.startswith("error"):
            outcome = classify_error(text, status)
            resume = resume_at(outcome, text)
            return self._with_usage(outcome, text[:500] or subtype, resume)
        if returncode != 0:
            return self._with_usage(Outcome.AGENT_ERROR, f"exited with code {returncode}: {text[:300]}")
        return self._with_usage(Outcome.SUCCESS, text.strip().splitlines()[0][:WIDTH] if text.strip() else "")

    def _with_usage(self, outcome: Outcome, detail: str, resume_at: float | None = None) -> AttemptReport:
        r = self.result or {}
        usage = r.get("usage") or {}
        tokens_in = sum(int(usage.get(k) or 0) for k in
                        ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
        summary = str(r.get("result") or "") if outcome is Outcome.SUCCESS else ""
        return AttemptReport(outcome, detail, tokens_in, int(usage.get("output_tokens") or 0),
                             float(r.get("total_cost_usd") or 0.0), self.session_id, resume_at, summary)


class ClaudeAdapter:
    """Adapter for `type: claude`."""

    kind = "claude"

    def invocation(self, ctx: AttemptContext) -> Invocation:
        o = ctx.agent.option
        argv = [str(o("binary", "claude")), "-p", "--output-format", "stream-json", "--verbose",
                "--permission-mode", str(o("permission_mode", "bypassPermissions"))]
        if o("model"):
            argv += ["--model", str(o("model"))]
        if o("max_turns"):
            argv += ["--max-turns", str(o("max_turns"))]
        if o("allowed_tools"):
            argv += ["--allowedTools", ",".join(str(t) for t in o("allowed_tools"))]
        if ctx.budget_usd is not None:
            argv += ["--max-budget-usd", f"{max(ctx.budget_usd, 0.0):.4f}"]
        resume = bool(o("resume_session", True)) and ctx.session_id and ctx.feedback
        if resume:
            argv += ["--resume", str(ctx.session_id)]
        argv += [str(a) for a in o("args", ()) or ()]
        prompt = ctx.feedback if resume else ctx.prompt
        return Invocation(tuple(argv), ctx.worktree, agent_env(ctx), prompt.encode())

    def parser(self, ctx: AttemptContext) -> ClaudeParser:
        return ClaudeParser(str(ctx.worktree))
