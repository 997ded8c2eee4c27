"""What each agent kind needs on a machine: its binary, how to ask its version, its credentials, how to install it.

Data only; `orchard doctor` probes and reports it.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Mapping
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
    env_prefixes: tuple[str, ...] = ()  # variables this kind may read (the allowlist beyond the basics)
    # where it keeps its own state, writable inside the sandbox: paths relative to $HOME, or `$VAR` (a directory the
    # agent's environment names, when it does)
    state: tuple[str, ...] = ()


REQUIREMENTS: dict[str, Requirement] = {
    "claude": Requirement(
        "claude", "claude", ("--version",), ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"),
        (".claude/.credentials.json",), "npm install -g @anthropic-ai/claude-code",
        "as root, bypassPermissions needs IS_SANDBOX=1 (a container)",
        ("ANTHROPIC_", "CLAUDE_", "IS_SANDBOX", "DISABLE_", "AWS_", "CLOUD_ML_", "VERTEX_", "GOOGLE_APPLICATION_"),
        state=("$CLAUDE_CONFIG_DIR", ".claude", ".claude.json")),
    "codex": Requirement(
        "codex", "codex", ("--version",), ("CODEX_API_KEY", "OPENAI_API_KEY"), (".codex/auth.json",),
        "npm install -g @openai/codex", env_prefixes=("OPENAI_", "CODEX_", "AZURE_OPENAI_"),
        state=("$CODEX_HOME", ".codex")),
    "aider": Requirement(
        "aider", "aider", ("--version",), ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY",
                                           "DEEPSEEK_API_KEY", "OPENROUTER_API_KEY"), (),
        "python -m pip install aider-chat", "reads the key of the model it is given",
        ("AIDER_", "OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "DEEPSEEK_", "OPENROUTER_", "GROQ_", "MISTRAL_",
         "LITELLM_", "OLLAMA_", "AZURE_", "COHERE_", "XAI_", "AWS_", "VERTEX"), state=(".aider",)),
    "gemini": Requirement(
        "gemini", "gemini", ("--version",), ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"),
        (".gemini/oauth_creds.json",), "npm install -g @google/gemini-cli",
        env_prefixes=("GEMINI_", "GOOGLE_", "CLOUDSDK_"), state=("$GEMINI_CLI_HOME", ".gemini")),
    # Cursor ships its CLI only through its own installer: the npm and PyPI packages named `cursor-agent` are
    # other people's projects, so nothing here can be pinned
    "cursor": Requirement(
        "cursor", "cursor-agent", ("--version",), ("CURSOR_API_KEY",),
        (".cursor/cli-config.json", ".config/cursor/auth.json"),
        "curl https://cursor.com/install -fsS | bash (Cursor's own installer; the npm and PyPI packages named "
        "cursor-agent are not it), then `cursor-agent login` or set CURSOR_API_KEY",
        "reports no cost: recorded as 0, so budget_usd does not cap it",
        env_prefixes=("CURSOR_",), state=("$CURSOR_CONFIG_DIR", ".cursor", ".config/cursor")),
}


# Every agent gets these (exact names, or prefixes ending in `_`/`*`): what programs need to run at all.
BASIC_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TERM", "COLORTERM", "TMPDIR",
             "TMP", "TEMP", "TZ", "XDG_*", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
             "NO_PROXY", "ALL_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
             "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_CONFIG_GLOBAL",
             "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM")


def agent_environment(environ: Mapping[str, str], kind: str, env_pass: object) -> dict[str, str]:
    """The allowlisted part of `environ` an agent of `kind` sees: the basics, its kind's variables, and the names
    (fnmatch patterns) its entry lists in `env_pass`; `env_pass: all` passes everything."""
    if env_pass == "all":  # noqa: S105 - the opt-out keyword, not a password
        return dict(environ)
    extra = tuple(str(p) for p in env_pass) if isinstance(env_pass, list | tuple) else ()
    allowed = _allowlist(kind, extra)
    return {name: value for name, value in environ.items() if allowed(name)}


def recordable_environment(environ: Mapping[str, str], is_secret: Callable[[str], bool]) -> dict[str, str]:
    """The basics of `environ` a run records at its start, for its setup and verify in every later session (`PATH`
    above all); proxies (their URLs may hold credentials) and any value that looks like a secret are left out and
    read live each time."""
    allowed = _allowlist("", ())
    return {name: value for name, value in environ.items()
            if allowed(name) and "proxy" not in name.lower() and not is_secret(value)}


@functools.lru_cache(maxsize=64)
def _allowlist(kind: str, extra: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    """One compiled matcher for every pattern an agent of `kind` may see (the same as `fnmatchcase` on each, once
    per plan entry instead of once per variable and pattern at every attempt's start)."""
    need = REQUIREMENTS.get(kind)
    patterns = [*BASIC_ENV, *(f"{prefix}*" for prefix in (need.env_prefixes if need else ())), *extra]
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match
