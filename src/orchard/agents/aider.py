"""Aider (`aider --message-file …`): plain-text output, no auto or dirty commits (orchard commits).

Aider exits 0 even when the model call failed, so the verdict comes from what it printed: an applied edit means
work was done (orchard then judges the diff); an API error with no edit is that error's outcome.
"""

from __future__ import annotations

import re

from orchard.agents.base import AttemptContext, AttemptReport, ExitInfo, Invocation, Stream, TailBuffer, classify_exit
from orchard.agents.claude import WIDTH, agent_env
from orchard.agents.errors import classify_error, resume_at
from orchard.core.model import Outcome

_TOKENS = re.compile(r"Tokens:\s*([\d.]+)(k?)\s*sent,\s*([\d.]+)(k?)\s*received"
                     r"(?:.*?Cost:.*?\$([\d.]+)\s*session)?", re.IGNORECASE)
_APPLIED = re.compile(r"^Applied edit to (.+)$")
_ERROR = re.compile(r"litellm\.\w*Error|APIError|RateLimitError|AuthenticationError|not able to authenticate"
                    r"|rate limit|quota|ServiceUnavailable|InternalServerError|BadRequestError", re.IGNORECASE)
_RETRY = re.compile(r"^Retrying in [\d.]+ seconds", re.IGNORECASE)
_EDIT_FAILED = re.compile(r"did not conform to the edit format|reflections allowed, stopping", re.IGNORECASE)
_SEVERITY = (Outcome.AUTH, Outcome.RATE_LIMITED, Outcome.API_ERROR, Outcome.AGENT_ERROR)
_WILD = frozenset("*?[")


def _count(number: str, k: str) -> int:
    return int(float(number) * (1000 if k else 1))


class AiderParser:
    """Collects applied edits, token/cost lines and error lines from aider's text output."""

    def __init__(self) -> None:
        self.tail = TailBuffer()
        self.edits: list[str] = []
        self.errors: list[str] = []
        self.tokens_in = self.tokens_out = 0
        self.cost = 0.0
        self.reply = AiderReply()

    def feed(self, line: str, stream: Stream) -> str | None:
        text = line.strip()
        self.tail.add(text)
        if stream == "stdout":
            self.reply.feed(text)
        if match := _APPLIED.match(text):
            self.edits.append(match.group(1))
            return f"Edit {match.group(1)}"[:WIDTH]
        if match := _TOKENS.search(text):
            self.tokens_in += _count(match.group(1), match.group(2))
            self.tokens_out += _count(match.group(3), match.group(4))
            self.cost = float(match.group(5)) if match.group(5) else self.cost
            return None
        if _ERROR.search(text) or _EDIT_FAILED.search(text):
            self.errors.append(text)
            return text[:WIDTH]
        return text[:WIDTH] if _RETRY.match(text) else None

    def finish(self, exit: ExitInfo) -> AttemptReport:
        base = classify_exit(exit, self.tail.text(3))
        if base.outcome is not Outcome.SUCCESS:
            return self._report(base.outcome, base.detail)
        if not self.edits and self.errors:
            outcome, message = min(((classify_error(e), e) for e in self.errors), key=lambda p: _SEVERITY.index(p[0]))
            if outcome is Outcome.AGENT_ERROR and not _EDIT_FAILED.search(message):
                outcome = Outcome.API_ERROR
            return self._report(outcome, message[:500], resume_at(outcome, self.tail.text()))
        return self._report(Outcome.SUCCESS, f"applied edits to {', '.join(self.edits)}" if self.edits else "")

    def _report(self, outcome: Outcome, detail: str, resume_at: float | None = None) -> AttemptReport:
        summary = self.reply.text() if outcome is Outcome.SUCCESS else ""
        return AttemptReport(outcome, detail, self.tokens_in, self.tokens_out, self.cost, None, resume_at, summary)


class AiderReply:
    """aider's last reply in its text output: the prose paragraph it wrote last, outside the fenced edit blocks
    (and their file-name lines) and before its `Tokens:` line."""

    def __init__(self) -> None:
        self.paragraph: list[str] = []
        self.last: list[str] = []
        self.final: list[str] = []
        self.fenced = False

    def feed(self, text: str) -> None:
        if text.startswith("```"):
            if not self.fenced and self.paragraph and " " not in self.paragraph[-1]:
                self.paragraph.pop()  # the edited file's name, printed above its block
            self.fenced = not self.fenced
            self._close()
        elif self.fenced:
            return
        elif _TOKENS.search(text):  # the reply of this exchange is complete: what came last before it
            self._close()
            self.final = self.last
        elif not text or _APPLIED.match(text):
            self._close()
        else:
            self.paragraph.append(text)

    def _close(self) -> None:
        if self.paragraph:
            self.last, self.paragraph = self.paragraph, []

    def text(self) -> str:
        self._close()
        return "\n".join(self.final or self.last)


class AiderAdapter:
    """Adapter for `type: aider`."""

    kind = "aider"

    def invocation(self, ctx: AttemptContext) -> Invocation:
        o = ctx.agent.option
        # --no-stream: aider then prints the provider's token counts, not its own estimate; --no-gitignore: aider
        # would add `.aider*` to the task's .gitignore (orchard excludes those files itself)
        argv = [str(o("binary", "aider")), "--message-file", str(ctx.prompt_file), "--yes-always",
                "--no-auto-commits", "--no-dirty-commits", "--no-pretty", "--no-fancy-input", "--no-stream",
                "--no-gitignore", "--no-show-model-warnings", "--no-check-update", "--analytics-disable",
                "--no-show-release-notes", "--edit-format", str(o("edit_format", "diff"))]
        if o("model"):
            argv += ["--model", str(o("model"))]
        argv += [str(a) for a in o("args", ()) or ()]
        literal = [f for f in ctx.task.files if not (_WILD & set(f))]  # declared files join the chat
        if literal:
            argv += ["--", *literal]
        env = {"COLUMNS": "1000", **agent_env(ctx)}  # unwrapped messages: one error, reset time included, per line
        return Invocation(tuple(argv), ctx.worktree, env, None)

    def parser(self, ctx: AttemptContext) -> AiderParser:
        return AiderParser()
