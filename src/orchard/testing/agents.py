"""Env and argv that run the real `claude` / `codex` CLIs offline against a FakeModelServer, and a runner for tests.

Verified with Claude Code 2.1.330 and Codex 0.169.0 (pinned in tools/agents/package.json; `tools/install-agents.sh`
puts them in `.tools/agents/node_modules/.bin`):

    claude: cwd = the repository, prompt on stdin,
        env  ANTHROPIC_BASE_URL=<server.base_url> ANTHROPIC_API_KEY=test-key CLAUDE_CONFIG_DIR=<tmp>
             CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 CLAUDE_CODE_MAX_RETRIES=0 IS_SANDBOX=1 (root needs it for
             bypassPermissions) DISABLE_AUTOUPDATER=1
        argv claude -p --output-format stream-json --verbose --permission-mode bypassPermissions
             --model claude-sonnet-4-5 [--max-turns N]
    codex: cwd = the repository, prompt on stdin (`-`),
        env  CODEX_HOME=<tmp> CODEX_API_KEY=test-key
        argv codex exec --json --skip-git-repo-check --sandbox workspace-write
             -c 'model_providers.fake={name="fake",base_url="<server>/v1",wire_api="responses",env_key="CODEX_API_KEY",
                 supports_websockets=false,request_max_retries=0,stream_max_retries=0}'
             -c model_provider=fake -m gpt-5.5 -
        (top-level `-c request_max_retries=0` is ignored by 0.169.0 with a warning: the retry keys are per provider.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchard.testing.fake_models import FakeModelServer

BIN_DIR = Path(".tools") / "agents" / "node_modules" / ".bin"
INSTALL_HINT = "run `bash tools/install-agents.sh` (pinned claude, codex and gemini into .tools/agents)"
CLAUDE_MODEL = "claude-sonnet-4-5"
CODEX_MODEL = "gpt-5.5"
TEST_KEY = "test-key"
LEAKY_PREFIXES = ("ANTHROPIC_", "CLAUDE_", "OPENAI_", "CODEX_", "AZURE_OPENAI", "IS_SANDBOX")


def agent_binary(name: str, root: Path | str) -> Path | None:
    """The pinned `claude` / `codex` under `root/.tools/agents`, or None when it is not installed."""
    path = Path(root) / BIN_DIR / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def clean_environ(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) without any real API keys, endpoints or agent config that could leak in."""
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if not k.startswith(LEAKY_PREFIXES)}


def claude_env(server: FakeModelServer, config_dir: Path | str, *, max_retries: int = 0, api_key: str = TEST_KEY,
               base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for `claude -p` talking only to `server`, with its config in `config_dir`."""
    return {**clean_environ(base), "ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": api_key,
            "CLAUDE_CONFIG_DIR": str(config_dir), "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": str(max_retries), "DISABLE_AUTOUPDATER": "1", "IS_SANDBOX": "1"}


def claude_argv(binary: Path | str, *, model: str = CLAUDE_MODEL, max_turns: int | None = None,
                extra: Sequence[str] = ()) -> list[str]:
    """`claude -p --output-format stream-json --verbose --permission-mode bypassPermissions --model M`."""
    argv = [str(binary), "-p", "--output-format", "stream-json", "--verbose", "--permission-mode",
            "bypassPermissions", "--model", model]
    if max_turns is not None:
        argv += ["--max-turns", str(max_turns)]
    return [*argv, *extra]


def codex_env(codex_home: Path | str, *, api_key: str = TEST_KEY, base: Mapping[str, str] | None = None,
              path: str | None = None) -> dict[str, str]:
    """Environment for `codex exec` with its home (config, sessions) in `codex_home` and the key in CODEX_API_KEY."""
    env = {**clean_environ(base), "CODEX_HOME": str(codex_home), "CODEX_API_KEY": api_key}
    if path is not None:  # e.g. with codex's own bubblewrap first (`orchard.agents.codex.codex_path`)
        env["PATH"] = path
    return env


def codex_provider_args(server: FakeModelServer, *, name: str = "fake", env_key: str = "CODEX_API_KEY",
                        retries: int = 0) -> list[str]:
    """`-c` overrides pointing codex at `server` over plain HTTP SSE (no WebSocket attempts, `retries` retries)."""
    provider = (f'{{name="{name}",base_url="{server.openai_base_url}",wire_api="responses",env_key="{env_key}",'
                f"supports_websockets=false,request_max_retries={retries},stream_max_retries={retries}}}")
    return ["-c", f"model_providers.{name}={provider}", "-c", f"model_provider={name}"]


def codex_argv(binary: Path | str, server: FakeModelServer, *, model: str = CODEX_MODEL,
               sandbox: str = "workspace-write", extra: Sequence[str] = ()) -> list[str]:
    """`codex exec --json --skip-git-repo-check --sandbox S <provider -c> -m M -` (the prompt comes on stdin)."""
    return [str(binary), "exec", "--json", "--skip-git-repo-check", "--sandbox", sandbox,
            *codex_provider_args(server), "-m", model, *extra, "-"]


@dataclass(frozen=True)
class AgentRun:
    """What one CLI run produced."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    killed: bool

    @property
    def events(self) -> list[dict[str, Any]]:
        """The stdout lines that are JSON objects, in order."""
        found = []
        for line in self.stdout.splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                found.append(data)
        return found

    @property
    def last_event(self) -> dict[str, Any] | None:
        """The final JSON line, if any."""
        events = self.events
        return events[-1] if events else None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """The events whose `type` is `kind`."""
        return [e for e in self.events if e.get("type") == kind]


def run_agent(argv: Sequence[str], cwd: Path | str, env: Mapping[str, str], prompt: str, timeout: float = 60.0, *,
              stop_when: Callable[[], bool] | None = None) -> AgentRun:
    """Run a CLI in its own process group with `prompt` on stdin; kill the group at `timeout` or once `stop_when()`."""
    started = time.monotonic()
    proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    killed = False
    data: str | None = prompt
    try:
        while True:
            left = started + timeout - time.monotonic()
            try:
                out, err = proc.communicate(data, timeout=max(0.0, min(left, 0.1) if stop_when else left))
                break
            except subprocess.TimeoutExpired:
                data = None  # already sent
                if time.monotonic() - started >= timeout or (stop_when is not None and stop_when()):
                    killed = True
                    kill_group(proc.pid)
                    out, err = proc.communicate()
                    break
    except BaseException:
        kill_group(proc.pid)
        proc.wait()
        raise
    return AgentRun(tuple(argv), proc.returncode, out, err, time.monotonic() - started, killed)


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by `pid` (the CLI and every tool process it started), if still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
