"""Codex CLI (`codex exec --json`), prompt on stdin; a retry can continue the session (`codex exec resume ID`).

Reads `thread.started` (session), `item.*` (commands, file changes, messages) as activity, `turn.completed` usage,
and `turn.failed` / `error` for failures. Codex reports tokens only: cost comes from the pricing table.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import Any

from orchard.agents.base import AttemptContext, AttemptReport, ExitInfo, Invocation, JsonLineParser, Stream
from orchard.agents.claude import WIDTH, agent_env
from orchard.agents.errors import classify_error, resume_at
from orchard.core.model import Outcome
from orchard.core.pricing import cost_usd, price_for

DEFAULT_MODEL = "gpt-5-codex"


@functools.cache
def bundled_bwrap_dir(binary: str) -> str | None:
    """The directory of codex's own bubblewrap (`codex-resources/bwrap` in its npm platform package), if any.

    codex prefers a `bwrap` on PATH, and with an older distribution build (Debian 12's 0.8.0) its workspace-write
    sandbox fails every file write; putting its own first keeps codex's sandbox working where bubblewrap is
    installed."""
    found = shutil.which(binary)
    for parent in Path(found).resolve().parents if found else ():
        if parent.name == "node_modules":
            for candidate in sorted(parent.glob("@openai/codex-linux-*/vendor/*/codex-resources/bwrap")):
                return str(candidate.parent)
    return None


def codex_path(binary: str, path: str) -> str:
    """`path` with codex's own bubblewrap first (see `bundled_bwrap_dir`)."""
    bundled = bundled_bwrap_dir(binary)
    return f"{bundled}{os.pathsep}{path}" if bundled else path


class CodexParser(JsonLineParser):
    """Per-attempt state over Codex's JSONL events."""

    def __init__(self, worktree: str, model: str | None, pricing: dict[str, Any] | None) -> None:
        super().__init__()
        self.root = worktree.rstrip("/") + "/"
        self.model, self.pricing = model, pricing
        self.session_id: str | None = None
        self.usage: dict[str, Any] = {}
        self.completed = False
        self.failure: str | None = None
        self.last_error: str | None = None

    def feed(self, line: str, stream: Stream) -> str | None:
        data = self.event(line, stream)
        if data is None:
            return None
        kind = data.get("type")
        if kind == "thread.started":
            self.session_id = data.get("thread_id") or self.session_id
            return "session started"
        if kind == "turn.completed":
            self.completed, self.usage = True, data.get("usage") or {}
        elif kind == "turn.failed":
            self.failure = str((data.get("error") or {}).get("message") or "turn failed")
        elif kind == "error":
            self.last_error = str(data.get("message") or "error")
            return self.last_error[:WIDTH]
        elif kind in ("item.started", "item.completed"):
            return self._item(data.get("item") or {}, kind == "item.completed")
        return None

    def _item(self, item: dict[str, Any], done: bool) -> str | None:
        kind = item.get("type")
        if kind == "command_execution" and not done:
            return f"Bash: {str(item.get('command', '')).strip()}"[:WIDTH]
        if kind == "file_change" and done:
            paths = [str(c.get("path", "")).removeprefix(self.root) for c in item.get("changes") or []]
            return f"Edit {', '.join(paths)}"[:WIDTH]
        if kind == "agent_message" and done:
            text = str(item.get("text", "")).strip()
            self.tail.add(text)
            return text.splitlines()[0][:WIDTH] if text else None
        if kind == "error":
            self.tail.add(str(item.get("message", "")))
        return None

    def finish(self, exit: ExitInfo) -> AttemptReport:
        if failed := self.process_failure(exit):
            return self._report(failed.outcome, failed.detail)
        problem = self.failure or (self.last_error if not self.completed or exit.returncode != 0 else None)
        if problem:
            outcome = classify_error(problem)
            if outcome is Outcome.AGENT_ERROR:
                outcome = Outcome.API_ERROR
            resume = resume_at(outcome, problem)
            return self._report(outcome, problem[:500], resume)
        if not self.completed:
            return self._report(Outcome.AGENT_ERROR, f"no turn.completed (exit {exit.returncode}): "
                                f"{self.tail.text(3) or 'no output'}")
        if exit.returncode != 0:
            return self._report(Outcome.AGENT_ERROR, f"exited with code {exit.returncode}")
        return self._report(Outcome.SUCCESS, self.tail.text(1)[:WIDTH])

    def _report(self, outcome: Outcome, detail: str, resume_at: float | None = None) -> AttemptReport:
        tokens_in = int(self.usage.get("input_tokens") or 0)
        tokens_out = int(self.usage.get("output_tokens") or 0)
        cached = int(self.usage.get("cached_input_tokens") or 0)
        price = price_for(self.model or DEFAULT_MODEL, self.pricing)
        return AttemptReport(outcome, detail, tokens_in, tokens_out, cost_usd(price, tokens_in, tokens_out, cached),
                             self.session_id, resume_at)


class CodexAdapter:
    """Adapter for `type: codex`."""

    kind = "codex"

    def invocation(self, ctx: AttemptContext) -> Invocation:
        o = ctx.agent.option
        resume = bool(o("resume_session", True)) and ctx.session_id and ctx.feedback
        argv = [str(o("binary", "codex")), "exec"]
        if resume:
            argv += ["resume", str(ctx.session_id)]
        argv += ["--json", "--skip-git-repo-check"]
        # inside orchard's sandbox codex's own cannot nest (it needs namespaces of its own), and orchard's is the
        # stricter: only the worktree is writable there
        sandbox = str(o("codex_sandbox", "danger-full-access" if ctx.confined else "workspace-write"))
        # `exec resume` has no --sandbox flag (0.169.0): the same setting goes in as a config override
        argv += ["-c", f'sandbox_mode="{sandbox}"'] if resume else ["--sandbox", sandbox]
        if o("model"):
            argv += ["-m", str(o("model"))]
        argv += [str(a) for a in o("args", ()) or ()]
        argv.append("-")  # the prompt comes on stdin
        prompt = ctx.feedback if resume else ctx.prompt
        env = {**agent_env(ctx), "PATH": codex_path(argv[0], os.environ.get("PATH", os.defpath))}
        return Invocation(tuple(argv), ctx.worktree, env, prompt.encode())

    def parser(self, ctx: AttemptContext) -> CodexParser:
        pricing = ctx.agent.option("pricing")
        return CodexParser(str(ctx.worktree), ctx.agent.option("model"), dict(pricing) if pricing else None)
