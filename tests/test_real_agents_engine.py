"""The real `claude` and `codex` CLIs, run by orchard's engine against the scripted fake model server.

Each scenario runs for both agents: a dependent plan whose agents create, edit and run things through their own
tools; tokens and cost in `status --json`; a 429 that pauses the task until the server recovers; 401 → auth with no
retry; claude's max turns; a hung stream → stalled with the process group killed; a retry that resumes the session.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import orchard
from orchard.testing import FakeModelServer, agent_binary, edit_file, error, hang, run, text, write_file
from orchard.testing.agents import INSTALL_HINT, codex_provider_args
from tests.conftest import git, run_orchard, run_processes

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ("claude", "codex")
CODEX_PRICE = {"input_per_mtok": 1.25, "output_per_mtok": 10.0, "cached_input_per_mtok": 0.125}
SONNET_45 = {"input": 3.0, "output": 15.0, "cache_read": 0.30, "cache_write": 3.75}


pytestmark = pytest.mark.usefixtures("no_real_credentials")  # only the fake server on loopback


def binary(kind: str) -> str:
    path = agent_binary(kind, ROOT)
    if path is None:
        pytest.fail(f"the pinned `{kind}` CLI is missing: {INSTALL_HINT}")
    return str(path)


def agent_entry(kind: str, server: FakeModelServer, home: Path, **extra: Any) -> dict[str, Any]:
    """A plan agent entry running the real CLI against `server`."""
    home.mkdir(parents=True, exist_ok=True)
    common = {"binary": binary(kind), "rate_limit_backoff": "1s", "stall_timeout": "4s", **extra}
    if kind == "claude":
        env = {"ANTHROPIC_BASE_URL": server.base_url, "ANTHROPIC_API_KEY": "test-key", "CLAUDE_CONFIG_DIR": str(home),
               "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "CLAUDE_CODE_MAX_RETRIES": "0",
               "DISABLE_AUTOUPDATER": "1", "IS_SANDBOX": "1"}
        return {"type": "claude", "model": "claude-sonnet-4-5", "env": env, **common}
    env = {"CODEX_HOME": str(home), "CODEX_API_KEY": "test-key"}
    return {"type": "codex", "model": "gpt-5.5", "env": env, "args": codex_provider_args(server),
            "pricing": CODEX_PRICE, **common}


def write_plan(tmp_path: Path, kind: str, server: FakeModelServer, tasks: Sequence[Mapping[str, Any]],
               **agent_extra: Any) -> Path:
    plan = {"parallel": 3, "defaults": {"agent": "ai", "retries": 0, "timeout": "2m"},
            "agents": {"ai": agent_entry(kind, server, tmp_path / f"{kind}-home", **agent_extra)}, "tasks": tasks}
    path = tmp_path / "plan.yaml"
    path.write_text(json.dumps(plan, indent=1))  # JSON is YAML
    return path


def status(repo: Path) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in run_orchard("status", "--json", cwd=repo).json()["tasks"]}


@pytest.mark.parametrize("kind", AGENTS)
def test_dependent_plan_edits_merge_and_report_tokens_and_cost(
        kind: str, server: FakeModelServer, repo: Path, tmp_path: Path) -> None:
    server.add_script("create", [write_file("notes.txt", "hello wrld\n"), text("Created notes.txt.")])
    server.add_script("fix", [edit_file("notes.txt", "hello wrld", "hello world"), text("Fixed the greeting.")])
    server.add_script("build", [run("printf 'built\\n' > build.txt"), text("Built.")])
    tasks: list[dict[str, Any]] = [
             {"id": "create", "prompt": "Create notes.txt. [[script:create]]"},
             {"id": "fix", "prompt": "Fix the greeting in notes.txt. [[script:fix]]", "depends_on": ["create"]},
             {"id": "build", "prompt": "Run the build. [[script:build]]"}]
    result = orchard.run(write_plan(tmp_path, kind, server, tasks), repo=repo)
    assert result.exit_code == 0, ({t: (r["status"], r["error"]) for t, r in status(repo).items()}, server.problems)
    integration = f"orchard/{result.run_id}/integration"
    assert git(repo, "show", f"{integration}:notes.txt") == "hello world\n"
    assert git(repo, "show", f"{integration}:build.txt") == "built\n"
    tasks_status = status(repo)
    for task_id in ("create", "fix", "build"):
        reported = server.usage_reported[task_id]
        row = tasks_status[task_id]
        cached = reported.cache_read_input_tokens
        if kind == "claude":  # claude's input excludes cache reads; orchard counts every input token
            assert row["tokens_in"] == reported.input_tokens + cached + reported.cache_creation_input_tokens
            expected = (reported.input_tokens * SONNET_45["input"] + cached * SONNET_45["cache_read"]
                        + reported.cache_creation_input_tokens * SONNET_45["cache_write"]
                        + reported.output_tokens * SONNET_45["output"]) / 1e6
        else:  # codex's input includes them; it reports no cost, so orchard prices the tokens
            assert row["tokens_in"] == reported.input_tokens
            expected = ((reported.input_tokens - cached) * CODEX_PRICE["input_per_mtok"]
                        + cached * CODEX_PRICE["cached_input_per_mtok"]
                        + reported.output_tokens * CODEX_PRICE["output_per_mtok"]) / 1e6
        assert row["tokens_out"] == reported.output_tokens and row["tokens_out"] > 0
        assert row["cost_usd"] == pytest.approx(expected, rel=1e-3) and row["cost_usd"] > 0
    assert result.summary["cost_usd"] == pytest.approx(sum(t["cost_usd"] for t in tasks_status.values()), rel=1e-6)


@pytest.mark.parametrize("kind", AGENTS)
def test_rate_limit_pauses_then_merges_without_using_a_retry(
        kind: str, server: FakeModelServer, repo: Path, tmp_path: Path) -> None:
    server.add_script("busy", [error(429, retry_after=1)])
    recover_when_paused = server.recover_when_paused("busy", [write_file("later.txt", "done\n"), text("Done.")])
    seen = recover_when_paused.seen

    tasks = [{"id": "busy", "prompt": "Write later.txt. [[script:busy]]"}]
    result = orchard.run(write_plan(tmp_path, kind, server, tasks), repo=repo, on_event=recover_when_paused)
    assert result.exit_code == 0, status(repo)
    assert "paused" in seen and seen[-1] == "merged"
    row = status(repo)["busy"]
    assert row["attempts"] == 2 and row["error"] is None  # retries: 0, yet the task merged on its second attempt
    run_id = result.run_id
    assert git(repo, "show", f"orchard/{run_id}/integration:later.txt") == "done\n"
    events = [e for _, e in _journal(repo)]
    paused = next(e for e in events if e["type"] == "task.status" and e["status"] == "paused")
    assert "rate limited" in paused["reason"] and paused["until"]
    outcomes = [e["outcome"] for e in events if e["type"] == "attempt.finished"]
    assert outcomes == ["rate_limited", "success"]


@pytest.mark.parametrize("kind", AGENTS)
def test_auth_failure_is_not_retried(kind: str, server: FakeModelServer, repo: Path, tmp_path: Path) -> None:
    server.add_script("locked", [error(401)])
    tasks = [{"id": "locked", "prompt": "Anything. [[script:locked]]", "retries": 3}]
    result = orchard.run(write_plan(tmp_path, kind, server, tasks), repo=repo)
    assert result.exit_code == 1
    row = status(repo)["locked"]
    assert row["status"] == "failed" and row["attempts"] == 1 and row["error"].startswith("auth")


def test_claude_max_turns(server: FakeModelServer, repo: Path, tmp_path: Path) -> None:
    server.add_script("long", [write_file("a.txt", "a\n"), write_file("b.txt", "b\n"), text("Done.")])
    tasks = [{"id": "long", "prompt": "Write two files. [[script:long]]"}]
    result = orchard.run(write_plan(tmp_path, "claude", server, tasks, max_turns=1), repo=repo)
    assert result.exit_code == 1
    row = status(repo)["long"]
    assert row["status"] == "failed" and row["error"].startswith("max_turns")


@pytest.mark.parametrize("kind", AGENTS)
def test_hung_stream_is_stalled_and_its_process_group_killed(
        kind: str, server: FakeModelServer, repo: Path, tmp_path: Path) -> None:
    server.add_script("stuck", [hang()])
    tasks = [{"id": "stuck", "prompt": "Think forever. [[script:stuck]]"}]
    result = orchard.run(write_plan(tmp_path, kind, server, tasks), repo=repo)
    assert result.exit_code == 1
    row = status(repo)["stuck"]
    assert row["status"] == "failed" and row["error"].startswith("stalled")
    assert run_processes(result.run_id) == []


@pytest.mark.parametrize("kind", AGENTS)
def test_verify_retry_resumes_the_agents_session_with_the_feedback(
        kind: str, server: FakeModelServer, repo: Path, tmp_path: Path) -> None:
    server.add_script("check", [write_file("answer.txt", "41\n"), text("Wrote it."),
                                write_file("answer.txt", "42\n", read_first=True), text("Fixed it.")])
    verify = ["python3", "-c", "import sys; t = open('answer.txt').read(); print('got', t); sys.exit(t != '42\\n')"]
    tasks = [{"id": "check", "prompt": "Write the answer. [[script:check]]", "retries": 1, "verify": verify}]
    result = orchard.run(write_plan(tmp_path, kind, server, tasks), repo=repo)
    assert result.exit_code == 0, (status(repo), server.problems)
    assert git(repo, "show", f"orchard/{result.run_id}/integration:answer.txt") == "42\n"
    retried = [r for r in server.requests_for("check") if r.step is not None and r.step >= 2]
    assert retried, "the second attempt did not continue the first attempt's conversation"
    assert "did not pass the verify command" in json.dumps(retried[0].body)


def _journal(repo: Path) -> list[tuple[int, dict[str, Any]]]:
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        return [(r[0], json.loads(r[1])) for r in db.execute("SELECT id, data FROM events ORDER BY id")]


def test_run_budget_stops_new_work_and_caps_claude_spending(
        server: FakeModelServer, repo: Path, tmp_path: Path) -> None:
    for name in ("first", "second", "third"):
        server.add_script(name, [write_file(f"{name}.txt", "x\n"), text("Done.")])
    tasks = [{"id": name, "prompt": f"Write {name}.txt. [[script:{name}]]"} for name in ("first", "second", "third")]
    plan = json.loads(write_plan(tmp_path, "claude", server, tasks).read_text())
    plan["parallel"], plan["budget_usd"] = 1, 0.01  # one claude attempt here costs $0.0075
    (tmp_path / "plan.yaml").write_text(json.dumps(plan))
    result = orchard.run(tmp_path / "plan.yaml", repo=repo)
    assert result.status == "budget_exhausted" and result.exit_code == 1
    rows = status(repo)
    assert rows["first"]["status"] == "merged"
    assert rows["second"]["status"] == "failed" and "budget" in rows["second"]["error"]  # claude stopped itself
    assert rows["third"]["attempts"] == 0  # the budget was reached: no new attempt
    assert result.summary["cost_usd"] >= 0.01
    logs = repo / ".orchard" / "runs" / result.run_id / "logs"
    assert "--max-budget-usd 0.0100" in (logs / "first.1.log").read_text()
    assert "--max-budget-usd 0.0025" in (logs / "second.1.log").read_text()  # what the run had left
