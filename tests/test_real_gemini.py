"""The real `gemini` CLI (pinned in tools/agents) driven offline by its hidden `--fake-responses FILE` hook.

- smoke: write_file, replace, run_shell_command and a final text in a temp git repository; the stream-json events
  and the tokens of `result.stats`.
- the errors the CLI really produces here: a broken fake response (exit 1), `model.maxSessionTurns` (exit 53), an
  untrusted folder (exit 55), an HTTP 429 from a loopback server (exit 173 = 429 % 256: fake responses cannot carry
  an HTTP status).
- through orchard's engine: a two-task plan (the second task edits what the first wrote) merges, and `status --json`
  has the tokens gemini reported.
- the transcripts recorded in tests/transcripts/gemini, read by orchard's GeminiParser.

`ORCHARD_RECORD_TRANSCRIPTS=1 .venv/bin/python -m pytest tests/test_real_gemini.py -k scenario` rewrites
tests/transcripts/gemini/*.jsonl and their manifest.json entries (stable paths under
$TMPDIR/orchard-transcripts/gemini-<name>, like `python -m orchard.testing.record`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

import orchard
from orchard.agents.base import ExitInfo
from orchard.agents.gemini import GeminiParser
from orchard.core.model import Outcome
from orchard.testing import (
    GeminiErrorServer,
    Script,
    Usage,
    agent_binary,
    broken_response,
    edit_file,
    gemini_argv,
    gemini_env,
    run,
    run_agent,
    script_usage,
    step,
    text,
    write_fake_responses,
    write_file,
)
from orchard.testing.gemini import GEMINI_INSTALL_HINT, GEMINI_MODEL, GEMINI_VERSION, gemini_settings
from orchard.testing.record import SUCCESS, WORK
from tests.conftest import git, init_repo, run_orchard

ROOT = Path(__file__).resolve().parent.parent
TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"
PROMPT = "Create notes.txt, fix its greeting, then copy it to copy.txt."
RECORD = bool(os.environ.get("ORCHARD_RECORD_TRANSCRIPTS"))
FLASH = {"input": 0.30, "output": 2.50, "cached": 0.075}  # orchard's built-in gemini-2.5-flash price, USD per Mtok


@pytest.fixture(autouse=True)
def _no_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what the tests set may reach gemini: no real key, endpoint or Google auth from the caller."""
    for name in list(os.environ):
        if name.startswith(("GEMINI_", "GOOGLE_", "CLOUD_SHELL")):
            monkeypatch.delenv(name)


def gemini_binary() -> Path:
    path = agent_binary("gemini", ROOT)
    if path is None:
        pytest.fail(f"the pinned `gemini` CLI is missing: {GEMINI_INSTALL_HINT}")
    return path


@dataclass(frozen=True)
class Scenario:
    """One real run: a script for `--fake-responses` (or an HTTP status from a loopback server) and what it gives."""

    name: str
    about: str
    script: Script = ()
    exit_code: int = 0
    max_session_turns: int | None = None
    http_status: int | None = None
    http_message: str | None = None
    retry_delay: str | None = None
    files: dict[str, str] = field(default_factory=dict)


QUOTA_MESSAGE = ("You exceeded your current quota, please check your plan and billing details.\n"
                 "* Quota exceeded for metric: generate_content_free_tier_requests, limit: 10\nPlease retry in 37.2s.")
SCENARIOS = [
    Scenario("success", "write_file, replace, run_shell_command, final text; exit 0", SUCCESS, 0,
             files={"notes.txt": "hello orchard\n", "copy.txt": "hello orchard\n"}),
    Scenario("error", "write_file, then a fake-responses line for the wrong method (the only error the hook can "
             "produce): result status error; exit 1", [write_file("notes.txt", "draft\n"), broken_response()], 1,
             files={"notes.txt": "draft\n"}),
    Scenario("max_turns", "model.maxSessionTurns 1 with a two-tool-step script: FatalTurnLimitedError; exit 53",
             [write_file("one.txt", "1\n"), write_file("two.txt", "2\n"), text()], 53, max_session_turns=1,
             files={"one.txt": "1\n"}),
    Scenario("rate_limit", "HTTP 429 RESOURCE_EXHAUSTED with RetryInfo 37s from a loopback GOOGLE_GEMINI_BASE_URL "
             "server (fake responses cannot carry a status), general.maxAttempts 1; exit 173", (), 173,
             http_status=429, http_message=QUOTA_MESSAGE, retry_delay="37s"),
]


def play(scenario: Scenario, base: Path) -> tuple[Any, dict[str, Any], Path]:
    """Run `scenario` in a fresh repository under `base`; return the run, its manifest entry and the repository."""
    shutil.rmtree(base, ignore_errors=True)
    repo = init_repo(base / "repo", {"README.md": "# transcript repo\n"})
    home = base / "home"
    fake = None if scenario.http_status else write_fake_responses(base / "fake-responses.jsonl", scenario.script)
    argv = gemini_argv(gemini_binary(), PROMPT, fake_responses=fake)
    server = GeminiErrorServer(scenario.http_status, scenario.http_message, retry_delay=scenario.retry_delay) \
        if scenario.http_status else None
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(server).base_url if server else None
        port = server.port if server else None
        added = gemini_env(home, base_url=url, max_session_turns=scenario.max_session_turns, base={})
        result = run_agent(argv, repo, {**os.environ, **added}, prompt="", timeout=90)
    settings = gemini_settings(max_session_turns=scenario.max_session_turns, api_key_auth=server is not None)
    stderr = [line for line in result.stderr.strip().splitlines() if line and not line[0].isspace() and line != "}"]
    entry = {"about": scenario.about, "cwd": str(repo), "argv": ["gemini", *argv[1:]], "env": added,
             "settings": settings, "prompt": PROMPT, "exit_code": result.returncode, "killed_after_seconds": None,
             "seconds": round(result.seconds, 2), "server_port": port,
             "server_usage": asdict(script_usage(scenario.script)),
             "server_requests": server.requests if server else [],
             "script": [repr(s) for s in scenario.script], "stderr_tail": stderr[-3:]}
    return result, entry, repo


def save_transcript(name: str, stdout: str, entry: dict[str, Any]) -> None:
    """Write tests/transcripts/gemini/<name>.jsonl and its manifest entry (only when recording)."""
    target = TRANSCRIPTS / "gemini" / f"{name}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(stdout)
    manifest_path = TRANSCRIPTS / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest[f"gemini/{name}.jsonl"] = entry
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario, tmp_path: Path) -> None:
    base = WORK / f"gemini-{scenario.name}" if RECORD else tmp_path / scenario.name
    result, entry, repo = play(scenario, base)
    assert result.returncode == scenario.exit_code, (result.stdout[-3000:], result.stderr[-3000:])
    events = result.events
    assert [e["type"] for e in events[:2]] == ["init", "message"], result.stdout
    assert events[0]["model"] == GEMINI_MODEL and events[0]["session_id"]
    assert events[1] == {**events[1], "role": "user", "content": PROMPT}
    final = result.last_event
    assert final is not None and final["type"] == "result", result.stdout
    assert all(e["type"] in ("init", "message", "tool_use", "tool_result", "result") for e in events)
    assert all(isinstance(e.get("timestamp"), str) for e in events)
    for name, content in scenario.files.items():
        assert (repo / name).read_text() == content
    untracked = set(git(repo, "ls-files", "--others", "--exclude-standard").split())
    assert untracked == set(scenario.files), "gemini wrote something else into the repository"
    stats = final["stats"]
    if scenario.name == "success":
        assert final["status"] == "success" and "error" not in final
        assert [e["tool_name"] for e in result.of_type("tool_use")] == ["write_file", "replace", "run_shell_command"]
        assert [e["status"] for e in result.of_type("tool_result")] == ["success"] * 3
        assert result.of_type("tool_result")[2]["output"] == "1 copy.txt"
        assert result.of_type("tool_use")[0]["parameters"] == {"file_path": "notes.txt", "content": "hello world\n"}
        assert [e["content"] for e in result.of_type("message") if e["role"] == "assistant"] == [
            "Wrote notes.txt (hello orchard) and copied it to copy.txt."]
        expected = script_usage(SUCCESS)
        assert (stats["input_tokens"], stats["output_tokens"], stats["cached"]) == (6300, 210, 300) == (
            expected.input_tokens, expected.output_tokens, expected.cache_read_input_tokens)
        assert stats["input"] == 6000 and stats["total_tokens"] == 6510 and stats["tool_calls"] == 3
        assert list(stats["models"]) == [GEMINI_MODEL]
    else:
        assert final["status"] == "error"
        message = final["error"]["message"]
        if scenario.name == "error":
            assert final["error"]["type"] == "unknown"
            assert message.startswith("[API Error: Unexpected response type, next response was for generateContent")
            assert (stats["input_tokens"], stats["output_tokens"]) == (1000, 50)  # the step before it
        elif scenario.name == "max_turns":
            assert final["error"]["type"] == "FatalTurnLimitedError"
            assert message.startswith("Reached max session turns for this session.")
            assert (stats["input_tokens"], stats["output_tokens"]) == (1000, 50)
        else:
            assert final["error"]["type"] == "unknown"
            assert message.startswith(f"[API Error: {QUOTA_MESSAGE}\nSuggested retry after 37s.]")
            assert stats["input_tokens"] == 0
            assert entry["server_requests"] == [
                f"POST /v1beta/models/{GEMINI_MODEL}:streamGenerateContent?alt=sse -> 429"]  # maxAttempts 1
    if RECORD:
        save_transcript(scenario.name, result.stdout, entry)


def test_untrusted_folder_exits_55_with_nothing_on_stdout(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", {"README.md": "# r\n"})
    fake = write_fake_responses(tmp_path / "fake.jsonl", [text("Hi.")])
    env = gemini_env(tmp_path / "home")
    del env["GEMINI_CLI_TRUST_WORKSPACE"]
    result = run_agent(gemini_argv(gemini_binary(), "hi", fake_responses=fake), repo, env, prompt="", timeout=60)
    assert result.returncode == 55 and result.stdout == ""
    assert "Gemini CLI is not running in a trusted directory" in result.stderr
    skip = run_agent(gemini_argv(gemini_binary(), "hi", fake_responses=fake, extra=["--skip-trust"]), repo, env,
                     prompt="", timeout=60)
    assert skip.returncode == 0 and skip.last_event and skip.last_event["status"] == "success"


def test_version_is_the_pinned_one(tmp_path: Path) -> None:
    env = gemini_env(tmp_path / "home")
    result = run_agent([str(gemini_binary()), "--version"], tmp_path, env, prompt="", timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == GEMINI_VERSION
    pinned = json.loads((ROOT / "tools" / "agents" / "package.json").read_text())["dependencies"]
    assert pinned["@google/gemini-cli"] == GEMINI_VERSION


def status(repo: Path) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in run_orchard("status", "--json", cwd=repo).json()["tasks"]}


def test_dependent_plan_merges_the_fake_models_files_with_its_tokens(repo: Path, tmp_path: Path) -> None:
    scripts: dict[str, Script] = {
        "create": [step(write_file("notes.txt", "hello wrld\n"), usage=Usage(1200, 80, cache_read_input_tokens=300)),
                   step(text("Created notes.txt."), usage=Usage(1500, 20))],
        "fix": [step(edit_file("notes.txt", "hello wrld", "hello world"), usage=Usage(2100, 60)),
                step(run("printf 'built\\n' > build.txt"), usage=Usage(2300, 40, cache_read_input_tokens=1000)),
                step(text("Fixed the greeting and built."), usage=Usage(2500, 30))],
    }
    env = gemini_env(tmp_path / "gemini-home", base={})
    agents = {f"gemini-{name}": {"type": "gemini", "binary": str(gemini_binary()), "model": GEMINI_MODEL, "env": env,
                                 "args": ["--fake-responses", str(write_fake_responses(tmp_path / f"{name}.jsonl",
                                                                                        script))],
                                 "stall_timeout": "60s"}
              for name, script in scripts.items()}
    tasks = [{"id": "create", "agent": "gemini-create", "prompt": "Create notes.txt with a greeting."},
             {"id": "fix", "agent": "gemini-fix", "prompt": "Fix the greeting in notes.txt, then build.",
              "depends_on": ["create"]}]
    plan = tmp_path / "plan.yaml"
    plan.write_text(json.dumps({"parallel": 2, "defaults": {"retries": 0, "timeout": "2m"}, "agents": agents,
                                "tasks": tasks}, indent=1))  # JSON is YAML
    result = orchard.run(plan, repo=repo)
    rows = status(repo)
    assert result.exit_code == 0, rows
    integration = f"orchard/{result.run_id}/integration"
    assert git(repo, "show", f"{integration}:notes.txt") == "hello world\n"
    assert git(repo, "show", f"{integration}:build.txt") == "built\n"
    for task_id, script in scripts.items():
        reported, row = script_usage(script), rows[task_id]
        assert row["status"] == "merged" and row["attempts"] == 1
        assert (row["tokens_in"], row["tokens_out"]) == (reported.input_tokens, reported.output_tokens)
        cached = reported.cache_read_input_tokens
        expected = ((reported.input_tokens - cached) * FLASH["input"] + cached * FLASH["cached"]
                    + reported.output_tokens * FLASH["output"]) / 1e6
        assert row["cost_usd"] == pytest.approx(expected, abs=1e-6) and row["cost_usd"] > 0  # status rounds
    logs = repo / ".orchard" / "runs" / result.run_id / "logs"
    assert "--fake-responses" in (logs / "fix.1.log").read_text()


EXPECTED_OUTCOMES = {"success": Outcome.SUCCESS, "error": Outcome.AGENT_ERROR, "max_turns": Outcome.MAX_TURNS,
                     "rate_limit": Outcome.RATE_LIMITED}


@pytest.mark.parametrize("name", list(EXPECTED_OUTCOMES))
def test_recorded_transcript_reads_as_expected_in_gemini_parser(name: str) -> None:
    entry = json.loads((TRANSCRIPTS / "manifest.json").read_text())[f"gemini/{name}.jsonl"]
    lines = (TRANSCRIPTS / "gemini" / f"{name}.jsonl").read_text().splitlines()
    parser = GeminiParser(entry["cwd"], GEMINI_MODEL, None)
    for line in lines:
        parser.feed(line, "stdout")
    report = parser.finish(ExitInfo(entry["exit_code"]))
    assert report.outcome is EXPECTED_OUTCOMES[name], report
    assert report.session_id == json.loads(lines[0])["session_id"]
    stats = json.loads(lines[-1])["stats"]
    assert (report.tokens_in, report.tokens_out) == (stats["input_tokens"], stats["output_tokens"])
