"""Gemini CLI (`gemini -p … --output-format stream-json --approval-mode yolo`).

Reads `init` (session, model), `tool_use` as activity, `error`, and the `result` event; its documented exit codes
(41 auth, 53 turn limit, …) decide when no result says more. Tokens only: cost from the pricing table.
"""

from __future__ import annotations

from typing import Any

from orchard.agents.base import AttemptContext, AttemptReport, ExitInfo, Invocation, Stream, TailBuffer, classify_exit
from orchard.agents.claude import WIDTH, agent_env, describe_tool, parse_json
from orchard.agents.errors import classify_error, resume_at
from orchard.core.model import Outcome
from orchard.core.pricing import cost_usd, price_for

ARGV_PROMPT_LIMIT = 100_000  # larger prompts go on stdin (Linux caps one argument at 128 KiB)
EXIT_OUTCOMES = {41: Outcome.AUTH, 53: Outcome.MAX_TURNS, 429 % 256: Outcome.RATE_LIMITED}
EXIT_MEANING = {42: "input error", 44: "sandbox error", 52: "config error", 54: "fatal tool error",
                55: "untrusted workspace", 130: "cancelled"}


class GeminiParser:
    """Per-attempt state over Gemini's stream-json events."""

    def __init__(self, worktree: str, model: str | None, pricing: dict[str, Any] | None) -> None:
        self.root, self.model, self.pricing = worktree, model, pricing
        self.tail = TailBuffer()
        self.session_id: str | None = None
        self.result: dict[str, Any] | None = None

    def feed(self, line: str, stream: Stream) -> str | None:
        data = parse_json(line) if stream == "stdout" else None
        if data is None:
            self.tail.add(line)
            return None
        kind = data.get("type")
        if kind == "init":
            self.session_id, self.model = data.get("session_id"), data.get("model") or self.model
            return "session started"
        if kind == "tool_use":
            return describe_tool(str(data.get("tool_name", "tool")), data.get("parameters") or {}, self.root)
        if kind == "message" and data.get("role") == "assistant":
            self.tail.add(str(data.get("content", "")))
            return str(data.get("content", "")).strip().splitlines()[0][:WIDTH] if data.get("content") else None
        if kind == "error":
            self.tail.add(str(data.get("message", "")))
            return str(data.get("message", ""))[:WIDTH]
        if kind == "result":
            self.result = data
        return None

    def finish(self, exit: ExitInfo) -> AttemptReport:
        base = classify_exit(exit, self.tail.text(3))
        if base.outcome in (Outcome.TIMEOUT, Outcome.STALLED, Outcome.CRASHED, Outcome.SETUP_FAILED):
            return self._report(base.outcome, base.detail)
        result = self.result or {}
        error = result.get("error") or {}
        message = str(error.get("message") or self.tail.text(2) or "")
        if exit.returncode in EXIT_OUTCOMES:
            outcome = EXIT_OUTCOMES[exit.returncode]
            return self._report(outcome, message[:500], resume_at(outcome, message))
        if result.get("status") == "error" or (exit.returncode not in (0, None) and message):
            outcome = classify_error(message)
            if exit.returncode in EXIT_MEANING and outcome is Outcome.AGENT_ERROR:
                message = f"{EXIT_MEANING[exit.returncode]}: {message}"
            return self._report(outcome, message[:500], resume_at(outcome, message))
        if self.result is None:
            return self._report(Outcome.AGENT_ERROR, f"no result event (exit {exit.returncode})")
        if exit.returncode != 0:
            return self._report(Outcome.AGENT_ERROR, f"exited with code {exit.returncode}")
        return self._report(Outcome.SUCCESS, "")

    def _report(self, outcome: Outcome, detail: str, resume_at: float | None = None) -> AttemptReport:
        stats = (self.result or {}).get("stats") or {}
        tokens_in, tokens_out = int(stats.get("input_tokens") or 0), int(stats.get("output_tokens") or 0)
        price = price_for(self.model, self.pricing)
        cost = cost_usd(price, tokens_in, tokens_out, int(stats.get("cached") or 0))
        return AttemptReport(outcome, detail, tokens_in, tokens_out, cost, self.session_id, resume_at)


class GeminiAdapter:
    """Adapter for `type: gemini`."""

    kind = "gemini"

    def invocation(self, ctx: AttemptContext) -> Invocation:
        o = ctx.agent.option
        resume = bool(o("resume_session", True)) and ctx.session_id and ctx.feedback
        prompt = ctx.feedback if resume else ctx.prompt
        large = len(prompt.encode()) > ARGV_PROMPT_LIMIT
        argv = [str(o("binary", "gemini")), "-p", "Carry out the task given on standard input." if large else prompt,
                "--output-format", "stream-json", "--approval-mode", str(o("approval_mode", "yolo"))]
        if o("model"):
            argv += ["-m", str(o("model"))]
        if resume:
            argv += ["--resume", str(ctx.session_id)]
        argv += [str(a) for a in o("args", ()) or ()]
        return Invocation(tuple(argv), ctx.worktree, agent_env(ctx), prompt.encode() if large else None)

    def parser(self, ctx: AttemptContext) -> GeminiParser:
        pricing = ctx.agent.option("pricing")
        return GeminiParser(str(ctx.worktree), ctx.agent.option("model"), dict(pricing) if pricing else None)
