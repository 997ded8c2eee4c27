"""Gemini CLI (`gemini -p … --output-format stream-json --approval-mode yolo`).

Reads `init` (session, model), `tool_use` as activity, `error`, and the `result` event; its documented exit codes
(41 auth, 53 turn limit, …) decide when no result says more. Tokens only: cost from the pricing table.
"""

from __future__ import annotations

from typing import Any

from orchard.agents.base import AttemptContext, AttemptReport, ExitInfo, Invocation, JsonLineParser, Stream
from orchard.agents.claude import WIDTH, agent_env, describe_tool
from orchard.agents.errors import classify_error, resume_at
from orchard.core.model import Outcome
from orchard.core.pricing import cost_usd, price_for

ARGV_PROMPT_LIMIT = 100_000  # larger prompts go on stdin (Linux caps one argument at 128 KiB)
# gemini exits with an HTTP error's status modulo 256 (429 → 173, 401 → 145 …) besides its own codes
EXIT_OUTCOMES = {41: Outcome.AUTH, 53: Outcome.MAX_TURNS, 429 % 256: Outcome.RATE_LIMITED, 401 % 256: Outcome.AUTH,
                 403 % 256: Outcome.AUTH, 500 % 256: Outcome.API_ERROR, 503 % 256: Outcome.API_ERROR}
EXIT_MEANING = {42: "input error", 44: "sandbox error", 52: "config error", 54: "fatal tool error",
                55: "untrusted workspace", 130: "cancelled"}


class GeminiParser(JsonLineParser):
    """Per-attempt state over Gemini's stream-json events."""

    def __init__(self, worktree: str, model: str | None, pricing: dict[str, Any] | None) -> None:
        super().__init__()
        self.root, self.model, self.pricing = worktree, model, pricing
        self.session_id: str | None = None
        self.result: dict[str, Any] | None = None
        self.response: list[str] = []  # the assistant's text since its last tool call: its final response

    def feed(self, line: str, stream: Stream) -> str | None:
        data = self.event(line, stream)
        if data is None:
            return None
        kind = data.get("type")
        if kind == "init":
            self.session_id, self.model = data.get("session_id"), data.get("model") or self.model
            return "session started"
        if kind == "tool_use":
            self.response = []
            return describe_tool(str(data.get("tool_name", "tool")), data.get("parameters") or {}, self.root)
        if kind == "message" and data.get("role") == "assistant":
            self.tail.add(str(data.get("content", "")))
            self.response = [*(self.response if data.get("delta") else ()), str(data.get("content", ""))]
            return str(data.get("content", "")).strip().splitlines()[0][:WIDTH] if data.get("content") else None
        if kind == "error":
            self.tail.add(str(data.get("message", "")))
            return str(data.get("message", ""))[:WIDTH]
        if kind == "result":
            self.result = data
        return None

    def finish(self, exit: ExitInfo) -> AttemptReport:
        if failed := self.process_failure(exit):
            return self._report(failed.outcome, failed.detail)
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
        tokens_in = int(stats.get("input_tokens") or 0)
        # output_tokens leaves out thinking; the total includes it, and thinking is billed as output
        tokens_out = max(int(stats.get("output_tokens") or 0), int(stats.get("total_tokens") or 0) - tokens_in)
        summary = "".join(self.response) if outcome is Outcome.SUCCESS else ""
        return AttemptReport(outcome, detail, tokens_in, tokens_out, self._cost(stats), self.session_id, resume_at,
                             summary)

    def _cost(self, stats: dict[str, Any]) -> float:
        """Price each model that did work (with `model: auto` the init event names no real model)."""
        models = stats.get("models") or {}
        if not isinstance(models, dict) or not models:
            models = {self.model or "": stats}
        total = 0.0
        for name, usage in models.items():
            if not isinstance(usage, dict):
                continue
            tokens_in = int(usage.get("input_tokens") or 0)
            tokens_out = max(int(usage.get("output_tokens") or 0), int(usage.get("total_tokens") or 0) - tokens_in)
            total += cost_usd(price_for(name, self.pricing), tokens_in, tokens_out, int(usage.get("cached") or 0))
        return total


class GeminiAdapter:
    """Adapter for `type: gemini`."""

    kind = "gemini"

    def invocation(self, ctx: AttemptContext) -> Invocation:
        o = ctx.agent.option
        resume = bool(o("resume_session", True)) and ctx.session_id and ctx.feedback
        prompt = ctx.feedback if resume else ctx.prompt
        large = len(prompt.encode()) > ARGV_PROMPT_LIMIT
        argv = [str(o("binary", "gemini")), "-p", "Carry out the task given on standard input." if large else prompt,
                "--output-format", "stream-json", "--approval-mode", str(o("approval_mode", "yolo")),
                "--skip-trust"]  # every orchard worktree is new to gemini, which refuses untrusted folders (exit 55)
        if o("model"):
            argv += ["-m", str(o("model"))]
        if resume:
            argv += ["--resume", str(ctx.session_id)]
        argv += [str(a) for a in o("args", ()) or ()]
        return Invocation(tuple(argv), ctx.worktree, agent_env(ctx), prompt.encode() if large else None)

    def parser(self, ctx: AttemptContext) -> GeminiParser:
        pricing = ctx.agent.option("pricing")
        return GeminiParser(str(ctx.worktree), ctx.agent.option("model"), dict(pricing) if pricing else None)
