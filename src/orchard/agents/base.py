"""The adapter interface every agent kind implements: build the invocation, parse output, classify the exit.

Adapters translate; they never spawn. `runtime.process` runs the `Invocation`, feeds each output line to the
attempt's `OutputParser`, and hands it the `ExitInfo` to turn into an `AttemptReport` (an outcome value, never an
exception).
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from orchard.core.model import AgentSpec, Outcome, Task

Stream = Literal["stdout", "stderr"]


@dataclass(frozen=True)
class AttemptContext:
    """Everything an adapter may use to build one attempt's command."""

    run_id: str
    task: Task
    attempt: int
    agent: AgentSpec
    worktree: Path
    prompt: str  # the full prompt, feedback from earlier attempts included
    prompt_file: Path  # the same text on disk, outside the worktree
    feedback: str = ""  # only the feedback (what a resumed session needs)
    session_id: str | None = None  # the previous attempt's session, for agents that can resume
    budget_usd: float | None = None  # what is left of the task's budget, for agents that can cap spending
    confined: bool = False  # runs in orchard's sandbox (an agent with a sandbox of its own may leave it off)
    outbox: Path | None = None  # the attempt's own writable directory: its summary file, its `orchard add` requests


@dataclass(frozen=True)
class Invocation:
    """How to start the agent: argv (no shell), extra environment, stdin bytes (None = /dev/null), cwd."""

    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: bytes | None = None


@dataclass(frozen=True)
class ExitInfo:
    """How the process ended, as the supervisor saw it."""

    returncode: int | None
    signal: int | None = None
    timed_out: bool = False
    stalled: bool = False
    spawn_error: str = ""
    duration_s: float = 0.0


@dataclass(frozen=True)
class AttemptReport:
    """The adapter's verdict on one attempt, with what the agent reported about itself."""

    outcome: Outcome
    detail: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    session_id: str | None = None
    resume_at: float | None = None  # for rate limits: when the provider said it resets (epoch seconds)
    summary: str = ""  # the agent's final message: what its dependents' prompts are told it did (`core.context`)


class OutputParser(Protocol):
    """Per-attempt, stateful reader of the agent's output."""

    def feed(self, line: str, stream: Stream) -> str | None:
        """Take one output line; return a short activity text worth showing, if any."""

    def finish(self, exit: ExitInfo) -> AttemptReport:
        """Classify the attempt once the process has ended."""


class Adapter(Protocol):
    """One agent kind."""

    kind: str

    def invocation(self, ctx: AttemptContext) -> Invocation: ...

    def parser(self, ctx: AttemptContext) -> OutputParser: ...


def classify_exit(exit: ExitInfo, detail: str = "") -> AttemptReport:
    """The outcome from the process alone: spawn error, timeout, stall, signal, exit code."""
    if exit.spawn_error:
        return AttemptReport(Outcome.SETUP_FAILED, exit.spawn_error)
    if exit.timed_out:
        return AttemptReport(Outcome.TIMEOUT, detail or f"timed out after {exit.duration_s:.0f}s")
    if exit.stalled:
        return AttemptReport(Outcome.STALLED, detail or "no output for the stall timeout")
    if exit.signal:
        return AttemptReport(Outcome.CRASHED, detail or f"killed by signal {exit.signal}")
    if exit.returncode == 0:
        return AttemptReport(Outcome.SUCCESS, detail)
    return AttemptReport(Outcome.AGENT_ERROR, detail or f"exited with code {exit.returncode}")


def orchard_env(ctx: AttemptContext) -> dict[str, str]:
    """The variables every agent process gets, whatever its kind."""
    return {
        "ORCHARD_RUN_ID": ctx.run_id,
        "ORCHARD_TASK_ID": ctx.task.id,
        "ORCHARD_ATTEMPT": str(ctx.attempt),
        "ORCHARD_PROMPT_FILE": str(ctx.prompt_file),
        "ORCHARD_WORKTREE": str(ctx.worktree),
        **(outbox_env(ctx.outbox) if ctx.outbox else {}),
    }


SUMMARY_FILE = "summary.md"


def outbox_env(outbox: Path) -> dict[str, str]:
    """What tells an agent where to leave its summary and its `orchard add` requests, and how to call orchard."""
    return {"ORCHARD_SUMMARY_FILE": str(outbox / SUMMARY_FILE), "ORCHARD_OUTBOX": str(outbox),
            "ORCHARD_BIN": orchard_bin()}


@functools.cache
def orchard_bin() -> str:
    """The orchard executable beside this Python (a venv's `bin/orchard`), else the one on PATH, else `orchard`."""
    beside = Path(sys.executable).parent / "orchard"
    return str(beside) if beside.is_file() else shutil.which("orchard") or "orchard"


class TailBuffer:
    """Keeps the last few lines of output for error details, bounded in size."""

    def __init__(self, lines: int = 20, width: int = 400) -> None:
        self.lines: list[str] = []
        self.limit = lines
        self.width = width

    def add(self, line: str) -> None:
        line = line.rstrip()
        if line:
            self.lines.append(line[: self.width])
            if len(self.lines) > self.limit:
                del self.lines[0]

    def text(self, last: int | None = None) -> str:
        return "\n".join(self.lines[-(last or self.limit) :])


PROCESS_FAILURES = frozenset({Outcome.TIMEOUT, Outcome.STALLED, Outcome.CRASHED, Outcome.SETUP_FAILED})


def parse_json(line: str) -> dict[str, Any] | None:
    """A JSON object line, or None for anything else (plain text, garbage, other JSON)."""
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class JsonLineParser:
    """What parsers of JSON-line agents (claude, codex, gemini, cursor) share: other lines feed the failure tail, and a
    process that failed as a process (timeout, stall, signal, not started) decides the outcome before any event."""

    def __init__(self) -> None:
        self.tail = TailBuffer()

    def event(self, line: str, stream: Stream) -> dict[str, Any] | None:
        """The JSON event on a stdout line; anything else goes to the tail."""
        data = parse_json(line) if stream == "stdout" else None
        if data is None:
            self.tail.add(line)
        return data

    def process_failure(self, exit: ExitInfo) -> AttemptReport | None:
        """The outcome when the process itself failed, else None (the agent's events decide)."""
        report = classify_exit(exit, self.tail.text(3))
        return report if report.outcome in PROCESS_FAILURES else None
