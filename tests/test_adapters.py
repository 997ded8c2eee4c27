"""Adapters as translators: real recorded CLI output in, outcome / tokens / cost / session / activity out.

The claude and codex transcripts were recorded from the real CLIs against the fake model server
(tests/transcripts/README.md); aider and gemini ones are written from their documented formats.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from orchard.agents import AttemptContext, ExitInfo, OutputParser, adapter_for
from orchard.agents.codex import bwrap_dir_for, bwrap_problem, codex_path
from orchard.agents.errors import classify_error, reset_time
from orchard.core.model import AgentSpec, Outcome, Task

HERE = Path(__file__).parent / "transcripts"
MANIFEST = json.loads((HERE / "manifest.json").read_text())
SONNET = {"input": 3.0, "output": 15.0, "cache_read": 0.30}


def ctx(kind: str, tmp_path: Path, **options: object) -> AttemptContext:
    task = Task(id="t", prompt="do it", agent="a", files=("src/app.py", "docs/*.md"))
    prompt_file = tmp_path / "t.1.md"
    prompt_file.write_text("do it")
    return AttemptContext("run", task, 1, AgentSpec("a", kind, None, options), tmp_path, "do it", prompt_file)


def replay(kind: str, name: str, tmp_path: Path, **options: object) -> tuple[OutputParser, list[str], ExitInfo]:
    """Feed a recorded transcript through a fresh parser, with the exit the recording saw."""
    entry = MANIFEST[f"{kind}/{name}.jsonl"]
    parser = adapter_for(kind).parser(ctx(kind, tmp_path, **options))
    activity = [a for line in (HERE / kind / f"{name}.jsonl").read_text().splitlines()
                if (a := parser.feed(line, "stdout"))]
    code = entry["exit_code"]
    if entry["killed_after_seconds"]:  # the recorder killed a hung CLI; orchard's stall watchdog does the same
        return parser, activity, ExitInfo(None, signal.SIGKILL, stalled=True)
    return parser, activity, ExitInfo(code)


@pytest.mark.parametrize(("name", "outcome"), [
    ("success", Outcome.SUCCESS), ("rate_limit", Outcome.RATE_LIMITED), ("rate_limit_retried", Outcome.RATE_LIMITED),
    ("auth", Outcome.AUTH), ("api_error", Outcome.API_ERROR), ("overloaded", Outcome.API_ERROR),
    ("max_turns", Outcome.MAX_TURNS), ("hung", Outcome.STALLED)])
def test_claude_transcripts(name: str, outcome: Outcome, tmp_path: Path) -> None:
    parser, _activity, exit_info = replay("claude", name, tmp_path)
    report = parser.finish(exit_info)
    assert report.outcome is outcome, report.detail
    assert report.session_id  # from system/init, kept even when the run fails
    if name == "max_turns":
        assert report.detail == "Reached maximum number of turns (1)"


def test_claude_success_reports_usage_cost_and_activity(tmp_path: Path) -> None:
    parser, activity, exit_info = replay("claude", "success", tmp_path)
    report = parser.finish(exit_info)
    usage = MANIFEST["claude/success.jsonl"]["server_usage"]
    assert report.tokens_in == usage["input_tokens"] + usage["cache_read_input_tokens"]
    assert report.tokens_out == usage["output_tokens"]
    expected = (usage["input_tokens"] * SONNET["input"] + usage["output_tokens"] * SONNET["output"]
                + usage["cache_read_input_tokens"] * SONNET["cache_read"]) / 1e6
    assert report.cost_usd == pytest.approx(expected)
    assert activity[0].startswith("session started")
    assert any(a.startswith("Write ") for a in activity) and any(a.startswith("Bash: ") for a in activity)
    assert not any(str(tmp_path) in a for a in activity)  # paths shown relative to the worktree


@pytest.mark.parametrize(("name", "outcome"), [
    ("success", Outcome.SUCCESS), ("rate_limit", Outcome.RATE_LIMITED), ("usage_limit", Outcome.RATE_LIMITED),
    ("auth", Outcome.AUTH), ("api_error", Outcome.API_ERROR), ("stream_error", Outcome.API_ERROR),
    ("hung", Outcome.STALLED)])
def test_codex_transcripts(name: str, outcome: Outcome, tmp_path: Path) -> None:
    parser, _, exit_info = replay("codex", name, tmp_path)
    report = parser.finish(exit_info)
    assert report.outcome is outcome, report.detail
    assert report.session_id
    if name == "usage_limit":
        assert report.resume_at is not None and 0 < report.resume_at - time.time() <= 86400


def test_codex_success_prices_tokens_from_the_table_or_the_entry(tmp_path: Path) -> None:
    usage = MANIFEST["codex/success.jsonl"]["server_usage"]
    pricing = {"input_per_mtok": 2.0, "output_per_mtok": 8.0, "cached_input_per_mtok": 0.5}
    parser, activity, exit_info = replay("codex", "success", tmp_path, model="gpt-5.5", pricing=pricing)
    report = parser.finish(exit_info)
    assert (report.tokens_in, report.tokens_out) == (usage["input_tokens"], usage["output_tokens"])
    cached = usage["cache_read_input_tokens"]
    expected = ((usage["input_tokens"] - cached) * 2.0 + cached * 0.5 + usage["output_tokens"] * 8.0) / 1e6
    assert report.cost_usd == pytest.approx(expected)
    assert any(a.startswith(("Bash: ", "Edit ")) for a in activity)


def test_invocations_are_argv_lists_with_the_prompt_on_stdin(tmp_path: Path) -> None:
    claude = adapter_for("claude").invocation(ctx("claude", tmp_path, model="sonnet", max_turns=5,
                                                  allowed_tools=("Read", "Edit"), args=("--bare",)))
    assert claude.argv[:5] == ("claude", "-p", "--output-format", "stream-json", "--verbose")
    assert claude.argv[claude.argv.index("--max-turns"):][:2] == ("--max-turns", "5")
    assert "Read,Edit" in claude.argv and claude.argv[-1] == "--bare" and claude.stdin == b"do it"
    codex = adapter_for("codex").invocation(ctx("codex", tmp_path, codex_sandbox="read-only"))
    assert codex.argv == ("codex", "exec", "--json", "--skip-git-repo-check", "--sandbox", "read-only", "-")
    aider = adapter_for("aider").invocation(ctx("aider", tmp_path, model="gpt-4.1"))
    assert "--no-auto-commits" in aider.argv and aider.argv[-2:] == ("--", "src/app.py")  # literal files join
    assert {"--no-stream", "--no-gitignore"} <= set(aider.argv) and aider.env["COLUMNS"] == "1000"
    assert aider.stdin is None and str(tmp_path / "t.1.md") in aider.argv
    gemini = adapter_for("gemini").invocation(ctx("gemini", tmp_path))
    assert gemini.argv[:3] == ("gemini", "-p", "do it") and "yolo" in gemini.argv



def fake_codex(root: Path) -> tuple[str, Path]:
    """codex as npm installs it under `root`: its launcher, and its platform package's bubblewrap (the directory)."""
    launcher = root / "node_modules" / ".bin" / "codex"
    resources = root / "node_modules" / "@openai" / "codex-linux-x64" / "vendor" / "x86_64" / "codex-resources"
    for folder in (launcher.parent, resources):
        folder.mkdir(parents=True)
    for program, text in ((launcher, "#!/bin/sh\n"), (resources / "bwrap", "bubblewrap of this codex build\n")):
        program.write_text(text)
        program.chmod(0o755)
    return str(launcher), resources


def test_codex_runs_its_own_bwrap_from_where_its_sandbox_accepts_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """codex skips a `bwrap` on PATH in a place its workspace-write sandbox lets commands write (and takes the next,
    the distribution's): installed elsewhere, its own goes first as it is; installed there, a copy in the cache."""
    binary, resources = fake_codex(tmp_path / "npm")
    cache, inside = tmp_path / "cache", (str(tmp_path / "npm"),)
    assert codex_path(binary, "/usr/bin", (str(tmp_path / "work"),), cache) == f"{resources}{os.pathsep}/usr/bin"
    copied = bwrap_dir_for(binary, inside, cache)
    assert copied is not None and Path(copied).parent == cache
    bwrap = Path(copied) / "bwrap"
    assert bwrap.read_bytes() == (resources / "bwrap").read_bytes() and os.access(bwrap, os.X_OK)
    assert bwrap_dir_for(binary, inside, cache) == copied and bwrap_problem(binary, inside, cache) is None
    assert bwrap_dir_for(binary, (str(tmp_path),), cache) is None  # the cache is no better: doctor says so
    assert "install codex elsewhere" in (bwrap_problem(binary, (str(tmp_path),), cache) or "")

    work = tmp_path / "work"
    in_work, own = fake_codex(work)  # codex installed inside the task's worktree
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    base = replace(ctx("codex", tmp_path, binary=in_work), worktree=work)
    first = adapter_for("codex").invocation(base).env["PATH"].split(os.pathsep)[0]
    assert Path(first).parent == tmp_path / "xdg" / "orchard" / "codex-bwrap"
    confined = adapter_for("codex").invocation(replace(base, confined=True))  # danger-full-access: no bwrap of codex's
    assert confined.env["PATH"].split(os.pathsep)[0] == str(own)

def test_retries_resume_the_previous_session_with_only_the_feedback(tmp_path: Path) -> None:
    base = ctx("claude", tmp_path)
    resumed = AttemptContext(base.run_id, base.task, 2, base.agent, tmp_path, "do it\n\nfeedback: tests fail",
                             base.prompt_file, feedback="tests fail", session_id="sess-1", budget_usd=0.25)
    inv = adapter_for("claude").invocation(resumed)
    assert inv.argv[inv.argv.index("--resume") + 1] == "sess-1" and inv.stdin == b"tests fail"
    assert inv.argv[inv.argv.index("--max-budget-usd") + 1] == "0.2500"
    codex = adapter_for("codex").invocation(replace(resumed, agent=AgentSpec("c", "codex"), session_id="thread-9",
                                                    budget_usd=None))
    assert codex.argv[:4] == ("codex", "exec", "resume", "thread-9") and codex.stdin == b"tests fail"
    assert 'sandbox_mode="workspace-write"' in codex.argv and "--sandbox" not in codex.argv
    off = AttemptContext(base.run_id, base.task, 2, AgentSpec("a", "claude", None, {"resume_session": False}),
                         tmp_path, "full prompt", base.prompt_file, "tests fail", "sess-1")
    assert "--resume" not in adapter_for("claude").invocation(off).argv


AIDER_OK = """Aider v0.86.1
Model: openai/gpt-4.1 with diff edit format
Applied edit to src/app.py
Tokens: 2.3k sent, 120 received. Cost: $0.0056 message, $0.0056 session.
"""


def test_aider_judges_by_edits_and_errors_not_exit_code(tmp_path: Path) -> None:
    parser = adapter_for("aider").parser(ctx("aider", tmp_path))
    activity = [a for line in AIDER_OK.splitlines() if (a := parser.feed(line, "stdout"))]
    report = parser.finish(ExitInfo(0))
    assert report.outcome is Outcome.SUCCESS and activity == ["Edit src/app.py"]
    assert (report.tokens_in, report.tokens_out, report.cost_usd) == (2300, 120, 0.0056)
    for name, outcome in (("rate_limit", Outcome.RATE_LIMITED), ("auth", Outcome.AUTH)):
        parser = adapter_for("aider").parser(ctx("aider", tmp_path))
        for line in (HERE / "aider" / f"{name}.txt").read_text().splitlines():  # recorded from the real aider
            parser.feed(line, "stdout")
        report = parser.finish(ExitInfo(MANIFEST[f"aider/{name}.txt"]["exit_code"]))  # 0: aider exits 0 on API errors
        assert report.outcome is outcome, report.detail
    assert report.detail.startswith("litellm.AuthenticationError")
    parser = adapter_for("aider").parser(ctx("aider", tmp_path))
    for line in ("The LLM did not conform to the edit format.", "Only 3 reflections allowed, stopping."):
        parser.feed(line, "stdout")
    assert parser.finish(ExitInfo(0)).outcome is Outcome.AGENT_ERROR


GEMINI_OK = [
    {"type": "init", "session_id": "g-1", "model": "gemini-2.5-pro"},
    {"type": "tool_use", "tool_name": "write_file", "tool_id": "w1", "parameters": {"file_path": "a.txt"}},
    {"type": "message", "role": "assistant", "content": "Created a.txt.", "delta": True},
    {"type": "result", "status": "success", "stats": {"input_tokens": 12886, "output_tokens": 60, "cached": 0}},
]


def test_gemini_stream_and_exit_codes(tmp_path: Path) -> None:
    parser = adapter_for("gemini").parser(ctx("gemini", tmp_path))
    activity = [a for e in GEMINI_OK if (a := parser.feed(json.dumps(e), "stdout"))]
    report = parser.finish(ExitInfo(0))
    assert report.outcome is Outcome.SUCCESS and report.session_id == "g-1" and "write_file a.txt" in activity
    assert report.tokens_in == 12886 and report.cost_usd == pytest.approx((12886 * 1.25 + 60 * 10.0) / 1e6)
    for code, outcome in ((41, Outcome.AUTH), (53, Outcome.MAX_TURNS), (1, Outcome.AGENT_ERROR)):
        parser = adapter_for("gemini").parser(ctx("gemini", tmp_path))
        parser.feed(json.dumps({"type": "result", "status": "error", "error": {"message": "boom"}}), "stdout")
        assert parser.finish(ExitInfo(code)).outcome is outcome


def test_error_texts_and_reset_times() -> None:
    now = 1_000_000.0
    assert classify_error("Claude AI usage limit reached|1755806400") is Outcome.RATE_LIMITED
    assert reset_time("Claude AI usage limit reached|1755806400", now) == 1755806400.0
    assert reset_time("You've hit your usage limit. Try again in 4 days 20 hours 9 minutes.", now) == (
        now + 4 * 86400 + 20 * 3600 + 9 * 60)
    assert reset_time("Rate limit reached. Please try again in 20s.", now) == now + 20
    assert reset_time("You exceeded your current quota.\nPlease retry in 37.2s.", now) == now + 37.2
    assert reset_time("Suggested retry after 37s.", now) == now + 37
    assert classify_error("Invalid API key · Please run /login") is Outcome.AUTH
    assert classify_error("anything", 500) is Outcome.API_ERROR and classify_error("segfault") is Outcome.AGENT_ERROR
