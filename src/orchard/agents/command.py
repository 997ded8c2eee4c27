"""The generic `command` agent: any program, given the prompt by file, stdin or argument.

Placeholders in `command` items: `{prompt}`, `{prompt_file}`, `{task_id}`, `{worktree}`, `{attempt}`.
Success is exit code 0; the last stderr lines explain a failure.
"""

from __future__ import annotations

from orchard.agents.base import (
    AttemptContext,
    AttemptReport,
    ExitInfo,
    Invocation,
    Stream,
    TailBuffer,
    classify_exit,
    orchard_env,
)

ACTIVITY_WIDTH = 120


def expand(item: str, values: dict[str, str]) -> str:
    """Replace known placeholders only (not str.format: other braces in user arguments stay as written)."""
    for key, value in values.items():
        item = item.replace("{" + key + "}", value)
    return item


class CommandParser:
    """Shows each non-empty stdout line as activity; remembers the output tail for failure details."""

    def __init__(self) -> None:
        self.tail = TailBuffer()

    def feed(self, line: str, stream: Stream) -> str | None:
        self.tail.add(line)
        text = line.strip()
        if stream == "stdout" and text:
            return text[:ACTIVITY_WIDTH]
        return None

    def finish(self, exit: ExitInfo) -> AttemptReport:
        report = classify_exit(exit)
        if report.outcome.value == "agent_error" and self.tail.lines:
            return AttemptReport(report.outcome, f"exited with code {exit.returncode}: {self.tail.text(3)}")
        return report


class CommandAdapter:
    """Adapter for `type: command`."""

    kind = "command"

    def invocation(self, ctx: AttemptContext) -> Invocation:
        via = str(ctx.agent.option("prompt_via", "file"))
        values = {
            "prompt_file": str(ctx.prompt_file),
            "task_id": ctx.task.id,
            "worktree": str(ctx.worktree),
            "attempt": str(ctx.attempt),
            "prompt": ctx.prompt,
        }
        template = [str(x) for x in ctx.agent.option("command", ())]
        argv = [expand(item, values) for item in template]
        if via == "arg" and not any("{prompt}" in item for item in template):
            argv.append(ctx.prompt)
        env = {**{str(k): str(v) for k, v in dict(ctx.agent.option("env", {}) or {}).items()}, **orchard_env(ctx)}
        stdin = ctx.prompt.encode() if via == "stdin" else None
        return Invocation(tuple(argv), ctx.worktree, env, stdin)

    def parser(self, ctx: AttemptContext) -> CommandParser:
        return CommandParser()
