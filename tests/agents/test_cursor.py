"""`type: cursor`: Cursor's headless CLI through its adapter, on transcripts written from its documented format.

The real `cursor-agent` cannot be installed here: Cursor ships it only through its own curl installer, and the
packages of that name in npm and PyPI are unrelated projects. So the transcripts in tests/transcripts/cursor are
written by hand (their README says from what), the parser is tested on them line by line, and the end-to-end tests
run orchard for real with `tests/agents/fake_cursor_agent.py` as `cursor-agent`: a child process that checks the
argv and environment the adapter gives it, replays a transcript and writes the file it names, so the invocation,
the environment allowlist, the parsing and the merge all run as they would with Cursor's CLI.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchard.agents import AttemptContext, AttemptReport, ExitInfo, adapter_for
from orchard.agents.cursor import ARGV_PROMPT_LIMIT
from orchard.core.model import AgentSpec, Outcome, Task
from orchard.errors import PlanError
from orchard.plan import load
from tests.conftest import git, query, run_orchard

HERE = Path(__file__).resolve().parent
TRANSCRIPTS = HERE.parent / "transcripts" / "cursor"
MANIFEST: dict[str, Any] = json.loads((TRANSCRIPTS / "manifest.json").read_text(encoding="utf-8"))
FAKE = HERE / "fake_cursor_agent.py"


def ctx(worktree: Path, prompt: str = "do it", **options: object) -> AttemptContext:
    """An attempt of a `cursor` entry with `options`; the prompt file is never read by the adapter's parser."""
    task = Task(id="t", prompt=prompt, agent="cur")
    agent = AgentSpec("cur", "cursor", None, options)
    return AttemptContext("run", task, 1, agent, worktree, prompt, worktree.parent / "t.1.md")


def replay(name: str, lines: list[str] | None = None, exit_info: ExitInfo | None = None
           ) -> tuple[AttemptReport, list[str]]:
    """A transcript's stdout and stderr through a fresh parser, then the verdict with the recorded exit."""
    entry = MANIFEST[f"{name}.jsonl"]
    parser = adapter_for("cursor").parser(ctx(Path(entry["cwd"])))
    stdout = (TRANSCRIPTS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if lines is None else lines
    activity = [a for line in stdout if (a := parser.feed(line, "stdout"))]
    for line in entry["stderr"]:
        parser.feed(line, "stderr")
    return parser.finish(exit_info or ExitInfo(entry["exit_code"])), activity


@pytest.mark.parametrize(("name", "outcome"), [
    ("success", Outcome.SUCCESS), ("auth", Outcome.AUTH), ("rate_limit", Outcome.RATE_LIMITED),
    ("error_result", Outcome.API_ERROR), ("untrusted", Outcome.AGENT_ERROR)])
def test_cursor_transcripts(name: str, outcome: Outcome) -> None:
    report, _ = replay(name)
    assert report.outcome is outcome, report.detail
    assert report.session_id == MANIFEST[f"{name}.jsonl"].get("session_id")  # from system/init, kept on failures
    assert report.cost_usd == 0.0  # Cursor reports none


def test_failures_say_why_and_when_to_come_back() -> None:
    auth, _ = replay("auth")
    assert auth.detail.startswith("Error: Authentication required")
    limited, _ = replay("rate_limit")
    assert limited.resume_at is not None and 30 <= limited.resume_at - time.time() <= 40  # "try again in 37 seconds"
    assert "HTTP 429" in limited.detail
    backend, _ = replay("error_result")
    assert backend.detail.startswith("ConnectError: [unavailable]") and backend.resume_at is None
    untrusted, _ = replay("untrusted")  # exit 0 without a result is never a success
    assert untrusted.detail.startswith("the workspace is not trusted (exit 0)")


def test_success_reports_activity_usage_and_the_final_text() -> None:
    report, activity = replay("success")
    assert activity == [
        "session started (GPT-5)", "I'll create notes.txt with the greeting.", "Write notes.txt", "Read notes.txt",
        "Bash: cat notes.txt", "codebase_search greeting", 'Created notes.txt; it reads "hello world".']
    usage = MANIFEST["success.jsonl"]["usage"]
    assert report.tokens_in == usage["inputTokens"] + usage["cacheReadTokens"] + usage["cacheWriteTokens"]
    assert report.tokens_out == usage["outputTokens"] and report.tokens_out > 0
    assert report.detail == "I'll create notes.txt with the greeting.Created notes.txt; it reads \"hello world\"."


def test_a_result_without_usage_counts_no_tokens() -> None:
    lines = (TRANSCRIPTS / "success.jsonl").read_text(encoding="utf-8").splitlines()
    final = json.loads(lines[-1])
    del final["usage"]  # older builds print none
    report, _ = replay("success", [*lines[:-1], json.dumps(final)])
    assert report.outcome is Outcome.SUCCESS and (report.tokens_in, report.tokens_out, report.cost_usd) == (0, 0, 0)


def test_the_process_decides_when_it_died_or_went_quiet_and_the_exit_code_counts() -> None:
    lines = (TRANSCRIPTS / "success.jsonl").read_text(encoding="utf-8").splitlines()
    killed, _ = replay("success", lines[:5], ExitInfo(None, signal.SIGKILL))
    assert killed.outcome is Outcome.CRASHED and killed.session_id  # the session is still known
    stalled, _ = replay("success", lines[:5], ExitInfo(None, signal.SIGKILL, stalled=True))
    assert stalled.outcome is Outcome.STALLED
    cut, _ = replay("success", lines[:-1])  # exit 0, but the stream ended before its result
    assert cut.outcome is Outcome.AGENT_ERROR and cut.detail.startswith("no result event (exit 0)")
    odd, _ = replay("success", lines, ExitInfo(3))  # a result that says success, yet a failing exit
    assert odd.outcome is Outcome.AGENT_ERROR and odd.detail.startswith("exited with code 3")


def test_invocation_is_an_argv_list_with_the_prompt_last_after_double_dash(tmp_path: Path) -> None:
    entry = MANIFEST["success.jsonl"]
    inv = adapter_for("cursor").invocation(ctx(tmp_path, entry["prompt"], model="gpt-5"))
    assert list(inv.argv) == entry["argv"] and inv.stdin is None and inv.cwd == tmp_path
    assert inv.env["ORCHARD_WORKTREE"] == str(tmp_path)
    custom = adapter_for("cursor").invocation(ctx(tmp_path, "--force is not an option here", binary="/opt/c/agent",
                                                  force=False, args=["--stream-partial-output"],
                                                  env={"CURSOR_CONFIG_DIR": "/x"}))
    assert custom.argv == ("/opt/c/agent", "-p", "--output-format", "stream-json", "--trust",
                           "--stream-partial-output", "--", "--force is not an option here")
    assert custom.env["CURSOR_CONFIG_DIR"] == "/x"


def test_a_prompt_too_long_for_one_argument_points_at_the_prompt_file(tmp_path: Path) -> None:
    big = ctx(tmp_path, "x" * (ARGV_PROMPT_LIMIT + 1))
    resumed = replace(big, attempt=2, feedback="y" * (ARGV_PROMPT_LIMIT + 1), session_id="chat-1")
    for attempt in (big, resumed):  # a long feedback cannot resume either: the full prompt is in the file
        inv = adapter_for("cursor").invocation(attempt)
        assert inv.argv[-2] == "--" and str(attempt.prompt_file) in inv.argv[-1] and len(inv.argv[-1]) < 300
        assert "--resume" not in inv.argv


def test_a_retry_resumes_the_chat_with_only_the_feedback(tmp_path: Path) -> None:
    base = ctx(tmp_path, "do it\n\nfeedback: tests fail")
    resumed = replace(base, attempt=2, feedback="tests fail", session_id="chat-1")
    inv = adapter_for("cursor").invocation(resumed)
    assert inv.argv[inv.argv.index("--resume") + 1] == "chat-1" and inv.argv[-2:] == ("--", "tests fail")
    off = replace(resumed, agent=AgentSpec("cur", "cursor", None, {"resume_session": False}))
    inv = adapter_for("cursor").invocation(off)
    assert "--resume" not in inv.argv and inv.argv[-1] == "do it\n\nfeedback: tests fail"


def test_plans_accept_cursor_entries_and_check_their_options(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("agents:\n  cur: {type: cursor, model: gpt-5, force: false, binary: agent}\n"
                    "tasks:\n  - {id: a, prompt: hi, agent: cur}\n")
    spec = load(plan, tmp_path).agents["cur"]
    assert (spec.type, spec.option("force"), spec.option("binary")) == ("cursor", False, "agent")
    plan.write_text("agents:\n  cur: {type: cursor, force: 'no', approval_mode: yolo}\n"
                    "tasks:\n  - {id: a, prompt: hi, agent: cur}\n")
    with pytest.raises(PlanError) as info:
        load(plan, tmp_path)
    fields = sorted(p.field for p in info.value.problems)
    assert fields == ["agents.cur.approval_mode", "agents.cur.force"], info.value.problems


def launcher(path: Path) -> Path:
    """An executable at `path` that runs the fake cursor-agent with this interpreter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = {str(FAKE)!r}\n"
                    f"runpy.run_path({str(FAKE)!r}, run_name='__main__')\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_doctor_says_how_to_install_cursor_and_checks_a_plans_entry(repo: Path, tmp_path: Path) -> None:
    bare = {"PATH": "/usr/bin:/bin", "CURSOR_API_KEY": ""}
    human = run_orchard("doctor", cwd=repo, env=bare)
    assert "cursor: ✗" in human.out, human.out
    assert "install: curl https://cursor.com/install -fsS | bash" in human.out and "cursor-agent login" in human.out
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cursor-agent").write_text("#!/bin/sh\necho '2026.09.18-9a7762b'\n", encoding="utf-8")
    (bin_dir / "cursor-agent").chmod(0o755)
    plan = tmp_path / "plan.yaml"
    plan.write_text("agents:\n  cur: {type: cursor}\ntasks:\n  - {id: a, prompt: hi, agent: cur}\n")
    result = run_orchard("doctor", str(plan), "--json", cwd=repo,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin", "CURSOR_API_KEY": "test-key"})
    assert result.code == 0, result.out + result.err
    (cursor,) = json.loads(result.out)["agents"]
    assert (cursor["kind"], cursor["binary"], cursor["version"]) == ("cursor", "cursor-agent", "2026.09.18-9a7762b")
    assert cursor["credentials"] == ["CURSOR_API_KEY"] and "no cost" in cursor["notes"]


def run_plan(repo: Path, tmp_path: Path, entry: dict[str, Any], retries: int, **env: str) -> dict[str, Any]:
    """`orchard run` of a one-task plan on a cursor entry, in a child process; the task's status row."""
    plan = {"parallel": 1, "defaults": {"agent": "cur", "retries": retries, "timeout": "1m"},
            "agents": {"cur": {"type": "cursor", "model": "gpt-5", "stall_timeout": "30s", **entry}},
            "tasks": [{"id": "notes", "prompt": MANIFEST["success.jsonl"]["prompt"]}]}
    path = tmp_path / "plan.yaml"
    path.write_text(json.dumps(plan), encoding="utf-8")  # JSON is YAML
    result = run_orchard("run", str(path), cwd=repo, env=env)
    status = run_orchard("status", "--json", cwd=repo)
    assert status.code == 0, result.out + result.err
    row: dict[str, Any] = status.json()["tasks"][0]
    row["exit_code"] = result.code
    return row


def test_orchard_runs_a_cursor_agent_and_merges_what_it_wrote(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cursor-agent` found on PATH; CURSOR_API_KEY reaches it only through the kind's environment allowlist."""
    monkeypatch.delenv("CURSOR_API_KEY", raising=False)
    bin_dir = launcher(tmp_path / "bin" / "cursor-agent").parent
    row = run_plan(repo, tmp_path, {"env": {"FAKE_CURSOR_SCENARIO": "success"}}, 0,
                   PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", CURSOR_API_KEY="test-key")
    assert (row["exit_code"], row["status"], row["error"]) == (0, "merged", None), row
    (run_id,), = query(repo, "SELECT id FROM runs")
    written = MANIFEST["success.jsonl"]["files"]["notes.txt"]
    assert git(repo, "show", f"orchard/{run_id}/integration:notes.txt") == written  # the merged result
    usage = MANIFEST["success.jsonl"]["usage"]
    assert (row["tokens_in"], row["tokens_out"]) == (usage["inputTokens"] + usage["cacheReadTokens"],
                                                     usage["outputTokens"])
    assert row["cost_usd"] == 0


def test_orchard_does_not_retry_a_cursor_agent_without_credentials(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry's `binary` names the CLI; without CURSOR_API_KEY it fails as Cursor does, and auth is final."""
    monkeypatch.delenv("CURSOR_API_KEY", raising=False)
    binary = launcher(tmp_path / "elsewhere" / "my-cursor")
    row = run_plan(repo, tmp_path, {"binary": str(binary)}, 2)
    assert (row["exit_code"], row["status"], row["attempts"]) == (1, "failed", 1), row
    assert row["error"].startswith("auth") and "Authentication required" in row["error"]
