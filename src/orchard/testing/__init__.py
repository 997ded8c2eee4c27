"""Offline test kit: an in-memory journal store (`MemoryStore`), a scripted fake model server (Anthropic Messages +
OpenAI Responses) and helpers to run the real `claude` / `codex` CLIs against it. Stdlib only.

    from orchard.testing import FakeModelServer, write_file, edit_file, run, text, error, hang

    scripts = {"edit": [write_file("a.txt", "one\\n"), edit_file("a.txt", "one", "two"), run("cat a.txt"),
                        text("Done.")],
               "limited": [error(429, retry_after=1)]}
    with FakeModelServer(scripts) as server:
        # prompt "... [[script:edit]]"; see orchard.testing.agents for claude_env/claude_argv/codex_env/codex_argv
        ...

The same scripts drive the real `gemini` through its own `--fake-responses FILE` hook (no server):
`write_fake_responses(path, script)`, `gemini_env(home)`, `gemini_argv(binary, prompt, fake_responses=path)`; see
orchard.testing.gemini.
"""

from orchard.testing.agents import (
    AgentRun,
    agent_binary,
    claude_argv,
    claude_env,
    codex_argv,
    codex_env,
    codex_provider_args,
    run_agent,
)
from orchard.testing.checkout import snapshot_checkout, snapshot_repository
from orchard.testing.fake_models import FakeModelServer, RecordedRequest
from orchard.testing.gemini import (
    GeminiErrorServer,
    broken_response,
    gemini_argv,
    gemini_env,
    script_usage,
    write_fake_responses,
    write_gemini_settings,
)
from orchard.testing.memory import InjectedFault, MemoryStore
from orchard.testing.script import (
    Script,
    Step,
    Usage,
    edit_file,
    error,
    hang,
    run,
    step,
    stream_error,
    text,
    usage_limit,
    write_file,
)

__all__ = [
    "AgentRun",
    "FakeModelServer",
    "GeminiErrorServer",
    "InjectedFault",
    "MemoryStore",
    "RecordedRequest",
    "Script",
    "Step",
    "Usage",
    "agent_binary",
    "broken_response",
    "claude_argv",
    "claude_env",
    "codex_argv",
    "codex_env",
    "codex_provider_args",
    "edit_file",
    "error",
    "gemini_argv",
    "gemini_env",
    "hang",
    "run",
    "run_agent",
    "script_usage",
    "snapshot_checkout",
    "snapshot_repository",
    "step",
    "stream_error",
    "text",
    "usage_limit",
    "write_fake_responses",
    "write_file",
    "write_gemini_settings",
]
