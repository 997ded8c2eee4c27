"""What each agent kind needs on a machine: its binary, how to ask its version, its credentials, how to install it.

Data only; `orchard doctor` probes and reports it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Requirement:
    """One agent kind's needs."""

    kind: str
    binary: str
    version_args: tuple[str, ...]
    credential_env: tuple[str, ...]  # any one of these is enough
    credential_files: tuple[str, ...]  # or one of these (relative to $HOME) from a login
    install: str
    notes: str = ""


REQUIREMENTS: dict[str, Requirement] = {
    "claude": Requirement(
        "claude", "claude", ("--version",), ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"),
        (".claude/.credentials.json",), "npm install -g @anthropic-ai/claude-code",
        "as root, bypassPermissions needs IS_SANDBOX=1 (a container)"),
    "codex": Requirement(
        "codex", "codex", ("--version",), ("CODEX_API_KEY", "OPENAI_API_KEY"), (".codex/auth.json",),
        "npm install -g @openai/codex"),
    "aider": Requirement(
        "aider", "aider", ("--version",), ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY",
                                           "DEEPSEEK_API_KEY", "OPENROUTER_API_KEY"), (),
        "python -m pip install aider-chat", "reads the key of the model it is given"),
    "gemini": Requirement(
        "gemini", "gemini", ("--version",), ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"),
        (".gemini/oauth_creds.json",), "npm install -g @google/gemini-cli"),
}
