"""Agent adapters, one module per kind: build the invocation, parse output lines, classify the exit. Never spawn."""

from __future__ import annotations

from orchard.agents.aider import AiderAdapter
from orchard.agents.base import (
    Adapter,
    AttemptContext,
    AttemptReport,
    ExitInfo,
    Invocation,
    OutputParser,
    classify_exit,
)
from orchard.agents.claude import ClaudeAdapter
from orchard.agents.codex import CodexAdapter
from orchard.agents.command import CommandAdapter
from orchard.agents.cursor import CursorAdapter
from orchard.agents.gemini import GeminiAdapter

_ADAPTERS: dict[str, Adapter] = {
    adapter.kind: adapter
    for adapter in (CommandAdapter(), ClaudeAdapter(), CodexAdapter(), AiderAdapter(), GeminiAdapter(),
                    CursorAdapter())
}


def adapter_for(kind: str) -> Adapter:
    """The adapter for an agent kind (plans are validated, so the kind exists)."""
    return _ADAPTERS[kind]


__all__ = [
    "Adapter",
    "AttemptContext",
    "AttemptReport",
    "ExitInfo",
    "Invocation",
    "OutputParser",
    "adapter_for",
    "classify_exit",
]
