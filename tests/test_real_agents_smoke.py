"""The real `claude` (2.1.330) and `codex` (0.169.0) binaries doing real work in a temp repo through the fake server.

The binaries come from `tools/install-agents.sh` (.tools/agents); when they are missing these tests fail, on purpose.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchard.agents.codex import codex_path, workspace_write_roots
from orchard.testing import (
    AgentRun,
    FakeModelServer,
    Usage,
    agent_binary,
    claude_argv,
    claude_env,
    codex_argv,
    codex_env,
    edit_file,
    error,
    hang,
    run,
    run_agent,
    step,
    text,
    write_file,
)
from orchard.testing.agents import INSTALL_HINT
from orchard.testing.script import Script
from tests.conftest import TOOLS, init_repo

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0  # wall clock per CLI run; a healthy run takes about a second
STALL = 2.0  # how long a hung stream must stay without a terminal event
EDIT_SCRIPT: Script = [
    step(write_file("notes.txt", "hello world\n"), usage=Usage(1200, 80, cache_read_input_tokens=300)),
    step(edit_file("notes.txt", "hello world", "hello orchard"), usage=Usage(1500, 60)),
    step(run("cat notes.txt > copy.txt && wc -l copy.txt"), usage=Usage(1700, 40)),
    step(text("Wrote notes.txt and copy.txt."), usage=Usage(1900, 30)),
]
# Sonnet 4.5 list prices per token (input, output, cache read) as Claude Code computes total_cost_usd.
SONNET = (3e-6, 15e-6, 0.3e-6)


def binary(name: str) -> Path:
    """The pinned CLI, or a failure telling how to install it."""
    path = agent_binary(name, ROOT)
    if path is None:
        pytest.fail(f"`{name}` is not installed under {ROOT / '.tools/agents'}: {INSTALL_HINT}")
    return path


def prompt(key: str) -> str:
    """A task prompt carrying the script marker."""
    return f"Create notes.txt, fix its greeting, then copy it to copy.txt. [[script:{key}]]\n"


def claude(server: FakeModelServer, repo: Path, tmp_path: Path, key: str, *, max_turns: int | None = None,
           stop_when: Callable[[], bool] | None = None) -> AgentRun:
    """Run the real claude on `repo` with the script `key`."""
    argv = claude_argv(binary("claude"), max_turns=max_turns)
    env = claude_env(server, tmp_path / "claude-config")
    return run_agent(argv, repo, env, prompt(key), TIMEOUT, stop_when=stop_when)


def codex(server: FakeModelServer, repo: Path, tmp_path: Path, key: str, *, model: str = "gpt-5.5",
          stop_when: Callable[[], bool] | None = None) -> AgentRun:
    """Run the real codex on `repo` with the script `key`."""
    home = tmp_path / "codex-home"
    home.mkdir(exist_ok=True)
    argv = codex_argv(binary("codex"), server, model=model)
    # codex's own bwrap, not Debian's 0.8: from its install, or from a copy in TOOLS where the checkout is under
    # /tmp (a place codex's sandbox lets commands write, so codex would skip it)
    path = codex_path(argv[0], os.environ["PATH"], workspace_write_roots(repo, os.environ), cache=TOOLS / "codex-bwrap")
    return run_agent(argv, repo, codex_env(home, path=path), prompt(key), TIMEOUT, stop_when=stop_when)


def assert_did_the_work(repo: Path, server: FakeModelServer, key: str, result: AgentRun) -> None:
    """Exit 0, the files written and edited for real, every step played once, nothing unforeseen."""
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    assert (repo / "notes.txt").read_text() == "hello orchard\n"
    assert (repo / "copy.txt").read_text() == "hello orchard\n"
    assert [r.step for r in server.requests_for(key)] == [0, 1, 2, 3]
    assert server.problems == []


def test_claude_writes_edits_runs_and_reports_usage(repo: Path, tmp_path: Path) -> None:
    with FakeModelServer({"edit": EDIT_SCRIPT}) as server:
        result = claude(server, repo, tmp_path, "edit")
        assert_did_the_work(repo, server, "edit", result)
        reported = server.usage_reported["edit"]
    assert result.events[0]["type"] == "system" and result.events[0]["subtype"] == "init"
    assert result.events[0]["claude_code_version"] == "2.1.330"
    tools = [b["name"] for e in result.of_type("assistant") for b in e["message"]["content"] if b["type"] == "tool_use"]
    assert tools == ["Write", "Read", "Edit", "Bash"]
    last = result.last_event
    assert last is not None and last["type"] == "result"
    assert (last["subtype"], last["is_error"], last["terminal_reason"]) == ("success", False, "completed")
    assert last["result"] == "Wrote notes.txt and copy.txt."
    assert reported == Usage(6300, 210, 300, 0, 4)
    usage = last["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["cache_read_input_tokens"]) == (6300, 210, 300)
    expected_cost = 6300 * SONNET[0] + 210 * SONNET[1] + 300 * SONNET[2]
    assert last["total_cost_usd"] > 0 and last["total_cost_usd"] == pytest.approx(expected_cost)


@pytest.mark.parametrize("model", ["gpt-5.5", "gpt-5-codex"])
def test_codex_writes_edits_runs_and_reports_usage(repo: Path, tmp_path: Path, model: str) -> None:
    """gpt-5.5 is in codex's bundled catalog (apply_patch offered); gpt-5-codex is not (exec_command only)."""
    with FakeModelServer({"edit": EDIT_SCRIPT}) as server:
        result = codex(server, repo, tmp_path, "edit", model=model)
        assert_did_the_work(repo, server, "edit", result)
        reported = server.usage_reported["edit"]
        offered = server.requests_for("edit")[0].body["tools"]
    patching = any(t.get("name") == "apply_patch" for t in offered)
    assert patching == (model == "gpt-5.5")
    kinds = [e["item"]["type"] for e in result.of_type("item.completed") if e["item"]["type"] != "error"]
    assert kinds == (["file_change", "file_change"] if patching else ["command_execution"] * 2) + [
        "command_execution", "agent_message"]
    last = result.last_event
    assert last is not None and last["type"] == "turn.completed"
    assert reported == Usage(6300, 210, 300, 0, 4)
    usage = last["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["cached_input_tokens"]) == (6300, 210, 300)


def test_claude_and_codex_share_one_server_at_once(tmp_path: Path) -> None:
    """Two tasks, one server: each conversation follows its own copy of the script (`edit@claude`, `edit@codex`)."""
    repos = {name: init_repo(tmp_path / name, {"README.md": "# r\n"}) for name in ("claude", "codex")}
    results: dict[str, AgentRun] = {}
    with FakeModelServer({"edit": EDIT_SCRIPT}, event_delay=0.005) as server:
        threads = [
            threading.Thread(target=lambda: results.update(claude=claude(server, repos["claude"], tmp_path,
                                                                         "edit@claude"))),
            threading.Thread(target=lambda: results.update(codex=codex(server, repos["codex"], tmp_path,
                                                                       "edit@codex"))),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT + 10)
        for name, result in results.items():
            assert_did_the_work(repos[name], server, f"edit@{name}", result)
        usage = server.usage_reported
    assert sorted(results) == ["claude", "codex"]
    assert usage["edit@claude"] == usage["edit@codex"] == Usage(6300, 210, 300, 0, 4)


@pytest.mark.parametrize(("status", "error_kind", "says"), [
    (429, "rate_limit", "API Error: Request rejected (429)"),
    (401, "authentication_failed", "Invalid API key"),
    (500, "server_error", "API Error: 500"),
])
def test_claude_reports_api_errors(repo: Path, tmp_path: Path, status: int, error_kind: str, says: str) -> None:
    with FakeModelServer({"fail": [error(status, retry_after=1)]}) as server:
        result = claude(server, repo, tmp_path, "fail")
        assert [r.status for r in server.requests_for("fail")] == [status]  # CLAUDE_CODE_MAX_RETRIES=0
    assert result.returncode == 1
    assert [e.get("error") for e in result.of_type("assistant")] == [error_kind]
    last = result.last_event
    assert last is not None and last["type"] == "result"
    assert (last["subtype"], last["is_error"], last["api_error_status"], last["terminal_reason"]) == (
        "success", True, status, "api_error")
    assert last["result"].startswith(says)


@pytest.mark.parametrize(("status", "says"), [
    (429, "exceeded retry limit, last status: 429 Too Many Requests"),
    (401, "unexpected status 401 Unauthorized: Incorrect API key provided"),
])
def test_codex_reports_api_errors(repo: Path, tmp_path: Path, status: int, says: str) -> None:
    with FakeModelServer({"fail": [error(status, retry_after=1)]}) as server:
        result = codex(server, repo, tmp_path, "fail")
        assert [r.status for r in server.requests_for("fail")] == [status]  # request_max_retries=0
    assert result.returncode == 1
    assert [e["type"] for e in result.events] == ["thread.started", "turn.started", "error", "turn.failed"]
    assert result.events[2]["message"].startswith(says)
    assert result.events[3]["error"]["message"] == result.events[2]["message"]


def test_claude_stops_at_max_turns(repo: Path, tmp_path: Path) -> None:
    with FakeModelServer({"turns": [write_file("one.txt", "1\n"), write_file("two.txt", "2\n"), text()]}) as server:
        result = claude(server, repo, tmp_path, "turns", max_turns=1)
        assert [r.step for r in server.requests_for("turns")] == [0]
    assert result.returncode == 1
    assert (repo / "one.txt").read_text() == "1\n" and not (repo / "two.txt").exists()
    last = result.last_event
    assert last is not None and last["type"] == "result"
    assert (last["subtype"], last["is_error"], last["terminal_reason"]) == ("error_max_turns", True, "max_turns")
    assert last["errors"] == ["Reached maximum number of turns (1)"]


@pytest.mark.parametrize("agent", ["claude", "codex"])
def test_a_hung_stream_leaves_no_terminal_event(repo: Path, tmp_path: Path, agent: str) -> None:
    script = [write_file("notes.txt", "draft\n"), hang("Now let me")]
    with FakeModelServer({"stuck": script}) as server:

        def stalled() -> bool:
            """The hung request arrived STALL seconds ago: time to kill the CLI's process group."""
            hung = [r for r in server.requests_for("stuck") if r.reply == "hang"]
            return bool(hung) and time.monotonic() - hung[0].at > STALL

        launch = claude if agent == "claude" else codex
        result = launch(server, repo, tmp_path, "stuck", stop_when=stalled)
        assert [r.reply for r in server.requests_for("stuck")] == ["stream", "hang"]
    assert result.killed and result.returncode == -9
    assert (repo / "notes.txt").read_text() == "draft\n"
    terminal = {"result", "turn.completed", "turn.failed"}
    assert result.events and not [e for e in result.events if e.get("type") in terminal]
