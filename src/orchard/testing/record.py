"""Record the real CLIs' stdout against the fake server: `python -m orchard.testing.record [--root R] [--out DIR]`.

Writes `DIR/claude/*.jsonl`, `DIR/codex/*.jsonl` (stdout exactly as printed) and `DIR/manifest.json` (argv, the env
variables set on top of the cleaned environment, exit code, kill, server usage, script) for adapter unit tests. Each
scenario runs in a fresh git repository at `$TMPDIR/orchard-transcripts/<agent>-<name>/repo`, so paths are stable.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchard.testing.agents import (
    INSTALL_HINT,
    agent_binary,
    claude_argv,
    claude_env,
    clean_environ,
    codex_argv,
    codex_env,
    run_agent,
)
from orchard.testing.fake_models import FakeModelServer
from orchard.testing.script import (
    Script,
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

WORK = Path(tempfile.gettempdir()) / "orchard-transcripts"
PROMPT = "Create notes.txt, fix its greeting, then copy it to copy.txt. [[script:{key}]]\n"
SUCCESS: Script = [
    step(write_file("notes.txt", "hello world\n"), usage=Usage(1200, 80, cache_read_input_tokens=300)),
    step(edit_file("notes.txt", "hello world", "hello orchard"), usage=Usage(1500, 60)),
    step(run("cat notes.txt > copy.txt && wc -l copy.txt"), usage=Usage(1700, 40)),
    step(text("Wrote notes.txt (hello orchard) and copied it to copy.txt."), usage=Usage(1900, 30)),
]


@dataclass(frozen=True)
class Scenario:
    """One transcript: which agent, which script, and how to run it."""

    agent: str
    name: str
    script: Script
    about: str
    max_turns: int | None = None
    max_retries: int = 0
    kill_after: float | None = None


SCENARIOS = [
    Scenario("claude", "success", SUCCESS, "write, edit (Read+Edit), Bash, final text; exit 0"),
    Scenario("claude", "rate_limit", [error(429, retry_after=1)], "HTTP 429 rate_limit_error, no retries"),
    Scenario("claude", "rate_limit_retried", [error(429, retry_after=1)],
             "HTTP 429 with retry-after: 1 and CLAUDE_CODE_MAX_RETRIES=1: one api_retry line, then the failure",
             max_retries=1),
    Scenario("claude", "auth", [error(401)], "HTTP 401 authentication_error"),
    Scenario("claude", "api_error", [error(500)], "HTTP 500 api_error"),
    Scenario("claude", "overloaded", [error(529)], "HTTP 529 overloaded_error"),
    Scenario("claude", "max_turns", [write_file("one.txt", "1\n"), write_file("two.txt", "2\n"), text()],
             "--max-turns 1 with a two-tool-step script: error_max_turns", max_turns=1),
    Scenario("claude", "hung", [write_file("notes.txt", "draft\n"), hang("Now let me")],
             "one Write step, then a stream that sends message_start and one text delta and stalls; killed after 4 s",
             kill_after=4.0),
    Scenario("codex", "success", SUCCESS, "apply_patch add, apply_patch update, exec_command, final message; exit 0"),
    Scenario("codex", "rate_limit", [error(429, retry_after=1)], "HTTP 429 rate_limit_exceeded, no retries"),
    Scenario("codex", "usage_limit", [usage_limit(3600)], "HTTP 429 usage_limit_reached with resets_at"),
    Scenario("codex", "auth", [error(401)], "HTTP 401 invalid_api_key"),
    Scenario("codex", "api_error", [error(500)], "HTTP 500 server_error"),
    Scenario("codex", "stream_error", [stream_error("server_error", "The model crashed mid-stream")],
             "200 stream ending in response.failed"),
    Scenario("codex", "hung", [write_file("notes.txt", "draft\n"), hang("Now let me")],
             "one apply_patch step, then a stream that sends created, an item and one text delta and stalls; killed "
             "after 4 s",
             kill_after=4.0),
]


def _git(repo: Path, *args: str) -> None:
    """Run git quietly in `repo` with a fixed identity."""
    subprocess.run(["git", "-c", "user.name=Transcript", "-c", "user.email=transcript@example.invalid", *args],
                   cwd=repo, check=True, capture_output=True)


def prepare(scenario: Scenario) -> tuple[Path, Path]:
    """A fresh repository (one commit) and an empty agent home for `scenario`."""
    base = WORK / f"{scenario.agent}-{scenario.name}"
    shutil.rmtree(base, ignore_errors=True)
    repo, home = base / "repo", base / "home"
    repo.mkdir(parents=True)
    home.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# transcript repo\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "initial")
    return repo, home


def record(scenario: Scenario, root: Path, out: Path) -> dict[str, Any]:
    """Run one scenario against a fresh server; write its stdout; return its manifest entry."""
    binary = agent_binary(scenario.agent, root)
    if binary is None:
        raise SystemExit(f"{scenario.agent} is not installed under {root}: {INSTALL_HINT}")
    repo, home = prepare(scenario)
    key = f"{scenario.agent}-{scenario.name}"
    base_env = {**clean_environ(), "HOME": str(home)}
    with FakeModelServer({key: scenario.script}) as server:
        if scenario.agent == "claude":
            env = claude_env(server, home / "claude-config", max_retries=scenario.max_retries, base=base_env)
            argv = claude_argv(binary, max_turns=scenario.max_turns)
        else:
            env = codex_env(home / "codex-home", base=base_env)
            (home / "codex-home").mkdir()
            argv = codex_argv(binary, server)
        result = run_agent(argv, repo, env, PROMPT.format(key=key), timeout=scenario.kill_after or 90.0)
        usage = server.usage_reported.get(key, Usage())
        requests = [f"{r.method} {r.path} step={r.step} -> {r.status} {r.reply}" for r in server.requests]
        port = server.port
    target = out / scenario.agent / f"{scenario.name}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(result.stdout)
    added = {k: v for k, v in env.items() if base_env.get(k) != v}
    return {"about": scenario.about, "cwd": str(repo), "argv": [Path(argv[0]).name, *argv[1:]],
            "env": {"HOME": str(home), **added}, "prompt": PROMPT.format(key=key), "exit_code": result.returncode,
            "killed_after_seconds": scenario.kill_after if result.killed else None,
            "seconds": round(result.seconds, 2), "server_port": port, "server_usage": asdict(usage),
            "server_requests": requests, "script": [repr(s) for s in scenario.script],
            "stderr_tail": result.stderr.strip().splitlines()[-3:]}


def main(argv: Sequence[str] | None = None) -> int:
    """Record every scenario (or those named `agent/name` after --only) into --out."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project root holding .tools/agents")
    parser.add_argument("--out", type=Path, default=Path("tests/transcripts"))
    parser.add_argument("--only", nargs="*", default=None, help="agent/name, e.g. claude/success")
    args = parser.parse_args(argv)
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for scenario in SCENARIOS:
        name = f"{scenario.agent}/{scenario.name}"
        if args.only is None or name in args.only:
            manifest[f"{name}.jsonl"] = entry = record(scenario, args.root.resolve(), args.out)
            print(f"{name}: exit {entry['exit_code']}, {entry['seconds']} s", file=sys.stderr)
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
