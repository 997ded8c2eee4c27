"""The `orchard` command line as a user meets it: real child processes on real repositories.

Read-only views (`status`, `logs`, the `run` outputs) share one module-wide repository with two finished runs;
tests that change things get their own repository.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from orchard.core.events import AgentActivity, AttemptStarted, RunStarted, TaskStatusChanged
from orchard.core.model import TaskStatus
from orchard.testing import snapshot_checkout
from orchard.ui.dashboard import render
from orchard.ui.report import status_table
from orchard.ui.snapshot import Snapshot
from tests.conftest import Result, agent_block, git, run_orchard

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
TASK_STATUSES = {"pending", "queued", "running", "verifying", "merging", "merged", "failed", "conflict", "blocked",
                 "cancelled", "paused"}
RUN_STATUSES = {"running", "completed", "failed", "interrupted", "cancelled"}
RUN_KEYS = {"id", "status", "base", "integration_branch", "started_at", "finished_at", "held", "checks", "eta"}
TASK_KEYS = {"id", "status", "agent", "host", "attempts", "branch", "started_at", "finished_at", "duration_s",
             "cost_usd", "tokens_in", "tokens_out", "setup_s", "slot", "port", "gate", "warnings", "error", "parent",
             "merged_commit", "branch_exists"}


def plan_text(tasks: str, parallel: int = 2) -> str:
    """A plan for the fake agent, no retries unless a task asks for them."""
    return f"parallel: {parallel}\ndefaults: {{agent: fake, retries: 0}}\nagents:\n{agent_block()}tasks:\n{tasks}"


def task(task_id: str, prompt: str, extra: str = "") -> str:
    """One task entry; `prompt` lines are fake-agent directives, `extra` more YAML fields (indented 4)."""
    lines = "\n".join("      " + line for line in prompt.strip().splitlines())
    return f"  - id: {task_id}\n{extra}    prompt: |\n{lines}\n"


def assert_clean_exit(result: Result, code: int) -> None:
    """The exit code is `code` and stderr holds no Python traceback."""
    assert result.code == code, f"exit {result.code}, expected {code}\nstdout:\n{result.out}\nstderr:\n{result.err}"
    assert "Traceback" not in result.err, result.err


def run_id_of(result: Result) -> str:
    """The run id announced by a plain-output `orchard run`."""
    match = re.search(r"run (\d{8}-\d{6}-[0-9a-f]{12}) (started|resumed)", result.out)
    assert match, result.out
    return match.group(1)


# ---- a shared repository with two finished runs ---------------------------------------------------------------

FIRST_PLAN = plan_text(
    task("ok", "@print marker-123\n@write ok.txt hello")
    + task("bad", "@print about to fail [/oops] [bold]loud\n@exit 1")
    + task("after", "@write after.txt after", extra="    depends_on: [bad]\n")
)
SECOND_PLAN = plan_text(
    task("solo", "@print marker-456\n@write solo.txt solo")
    + task("flaky", "@print first line\n@print second line\n@exit 2")
)


@dataclass(frozen=True)
class TwoRuns:
    repo: Path
    first: Result  # `run --json` of FIRST_PLAN: ok merged, bad failed, after blocked
    first_id: str
    second: Result  # plain `run` of SECOND_PLAN (the latest run): solo merged, flaky failed
    second_id: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoRuns]:
    home = tmp_path_factory.mktemp("home")
    (home / "gitconfig").write_text("[user]\n\tname = Test User\n\temail = test@example.invalid\n")
    with pytest.MonkeyPatch.context() as mp:  # the autouse isolation is function-scoped; repeat it here
        mp.setenv("HOME", str(home))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        mp.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig"))
        root = tmp_path_factory.mktemp("shared") / "repo"
        root.mkdir()
        git(root, "init", "-q", "-b", "main")
        (root / "README.md").write_text("# shared\n")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "initial")
        plans = tmp_path_factory.mktemp("plans")
        (plans / "first.yaml").write_text(FIRST_PLAN)
        (plans / "second.yaml").write_text(SECOND_PLAN)
        first = run_orchard("run", "--json", str(plans / "first.yaml"), cwd=root)
        events = first.ndjson()
        second = run_orchard("run", str(plans / "second.yaml"), cwd=root)
        yield TwoRuns(root, first, str(events[0]["run_id"]), second, run_id_of(second))


def status_json(repo: Path, *args: str, cwd: Path | None = None) -> dict[str, Any]:
    result = run_orchard("status", "--json", *args, cwd=cwd or repo)
    assert_clean_exit(result, 0)
    doc: dict[str, Any] = result.json()
    return doc


def check_status_document(doc: dict[str, Any]) -> None:
    """The `status --json` contract: exact keys, types, ISO 8601 UTC times, known statuses."""
    assert set(doc) == {"run", "tasks", "totals"}
    assert set(doc["totals"]) == {"cost_usd", "tokens_in", "tokens_out", "agents"}
    assert doc["totals"]["agents"]["fake"]["attempts"] == sum(t["attempts"] for t in doc["tasks"])
    run = doc["run"]
    assert set(run) == RUN_KEYS
    assert run["status"] in RUN_STATUSES
    assert ISO_UTC.match(run["started_at"]), run["started_at"]
    assert run["finished_at"] is None or ISO_UTC.match(run["finished_at"]), run["finished_at"]
    assert run["integration_branch"] == f"orchard/{run['id']}/integration"
    assert isinstance(doc["tasks"], list) and doc["tasks"]
    for t in doc["tasks"]:
        assert set(t) == TASK_KEYS, t
        assert t["status"] in TASK_STATUSES
        assert isinstance(t["id"], str) and isinstance(t["agent"], str)
        assert t["host"] is None or (isinstance(t["host"], str) and t["host"]), t
        assert isinstance(t["attempts"], int) and not isinstance(t["attempts"], bool)
        for key in ("started_at", "finished_at"):
            assert t[key] is None or ISO_UTC.match(t[key]), (key, t[key])
        assert t["branch"] is None or isinstance(t["branch"], str)
        assert t["duration_s"] is None or isinstance(t["duration_s"], float)
        assert isinstance(t["cost_usd"], float), f"cost_usd must be a JSON float, got {t['cost_usd']!r}"
        assert isinstance(t["tokens_in"], int) and isinstance(t["tokens_out"], int)
        assert t["error"] is None or (isinstance(t["error"], str) and t["error"])
        assert (t["merged_commit"] is None) == (t["status"] != "merged"), t
        assert t["branch_exists"] is None if t["branch"] is None else isinstance(t["branch_exists"], bool), t


# ---- status -----------------------------------------------------------------------------------------------------


def test_status_json_contract_for_named_and_latest_run(runs: TwoRuns) -> None:
    first = status_json(runs.repo, runs.first_id)
    check_status_document(first)
    assert first["run"]["id"] == runs.first_id
    assert first["run"]["status"] == "failed" and first["run"]["base"] == "main"
    assert first["run"]["finished_at"] is not None
    tasks = {t["id"]: t for t in first["tasks"]}
    assert [t["id"] for t in first["tasks"]] == ["ok", "bad", "after"]  # plan order
    assert tasks["ok"]["status"] == "merged" and tasks["ok"]["attempts"] == 1 and tasks["ok"]["error"] is None
    assert tasks["ok"]["branch"] == f"orchard/{runs.first_id}/task/ok"
    assert tasks["ok"]["duration_s"] is not None and tasks["ok"]["duration_s"] >= 0
    # the merged change is on the integration branch; the task branch was deleted after merging, and says so
    merged = tasks["ok"]["merged_commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", merged)
    git(runs.repo, "merge-base", "--is-ancestor", merged, first["run"]["integration_branch"])  # raises if not
    assert tasks["ok"]["branch_exists"] is False and tasks["bad"]["branch_exists"] is True
    assert tasks["bad"]["status"] == "failed" and "exit" in tasks["bad"]["error"]
    assert tasks["after"]["status"] == "blocked" and "bad" in tasks["after"]["error"]
    assert tasks["after"]["attempts"] == 0 and tasks["after"]["started_at"] is None
    assert (tasks["ok"]["host"], tasks["bad"]["host"], tasks["after"]["host"]) == ("local", "local", None)
    assert tasks["after"]["duration_s"] is None

    latest = status_json(runs.repo)
    check_status_document(latest)
    assert latest["run"]["id"] == runs.second_id
    assert {t["id"]: t["status"] for t in latest["tasks"]} == {"solo": "merged", "flaky": "failed"}


def test_status_table_and_summary(runs: TwoRuns) -> None:
    result = run_orchard("status", runs.first_id, cwd=runs.repo)
    assert_clean_exit(result, 0)
    assert runs.first_id in result.out
    for word in ("ok", "merged", "bad", "failed", "after", "blocked", "speedup"):
        assert word in result.out
    # agent output in the error column is shown as text, never interpreted as rich markup
    assert "[/oops]" in result.out and "[bold]loud" in result.out


def test_status_dash_C_works_from_another_directory(runs: TwoRuns, tmp_path: Path) -> None:
    (runs.repo / "sub").mkdir(exist_ok=True)
    for target in (runs.repo, runs.repo / "sub"):  # the repository *containing* DIR
        result = run_orchard("-C", str(target), "status", "--json", cwd=tmp_path)
        assert_clean_exit(result, 0)
        doc = result.json()
        assert doc["run"]["id"] == runs.second_id


def test_status_and_logs_work_inside_a_kept_task_worktree(runs: TwoRuns) -> None:
    kept = runs.repo / ".orchard" / "worktrees" / runs.first_id / "bad"
    assert kept.is_dir()
    doc = status_json(runs.repo, runs.first_id, cwd=kept)
    assert {t["id"]: t["status"] for t in doc["tasks"]}["bad"] == "failed"
    logs = run_orchard("logs", "bad", "--run", runs.first_id, cwd=kept)
    assert_clean_exit(logs, 0)
    assert "about to fail" in logs.out


def test_status_without_runs_exits_2_with_a_clear_message(orchard: Callable[..., Result]) -> None:
    result = orchard("status", "--json")
    assert_clean_exit(result, 2)
    assert "no orchard runs" in result.err
    assert result.out == ""


def test_status_unknown_run_exits_2(runs: TwoRuns) -> None:
    result = run_orchard("status", "no-such-run", cwd=runs.repo)
    assert_clean_exit(result, 2)
    assert "no-such-run" in result.err


@pytest.mark.parametrize("args", [("status", "--json"), ("logs", "a"), ("run", "PLAN")])
def test_outside_a_git_repository_exits_3(args: tuple[str, ...], tmp_path: Path,
                                          write_plan: Callable[[str], Path]) -> None:
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    plan = write_plan(plan_text(task("a", "@write a.txt a")))
    result = run_orchard(*(str(plan) if a == "PLAN" else a for a in args), cwd=outside)
    assert_clean_exit(result, 3)
    assert "not a git repository" in result.err


# ---- run output -------------------------------------------------------------------------------------------------


def test_run_json_prints_ndjson_only(runs: TwoRuns) -> None:
    assert_clean_exit(runs.first, 1)
    lines = [line for line in runs.first.out.splitlines() if line.strip()]
    assert lines, "no output"
    events = runs.first.ndjson()  # every line parses, nothing else on stdout
    assert len(events) == len(lines)
    for event in events:
        assert isinstance(event, dict) and isinstance(event.get("type"), str)
        assert ISO_UTC.match(event["ts"]), event
        assert event["run_id"] == runs.first_id
    types = [e["type"] for e in events]
    for needed in ("run.started", "task.status", "attempt.started", "attempt.finished", "merge.finished",
                   "run.finished"):
        assert needed in types, f"{needed} missing from {sorted(set(types))}"
    assert types[0] == "run.started" and types[-1] == "run.finished"
    finished = events[-1]
    assert finished["status"] == "failed"
    summary = finished["summary"]
    assert summary["merged"] == 1 and summary["tasks"] == 3
    for key in ("wall_s", "work_s", "speedup", "cost_usd"):
        assert isinstance(summary[key], int | float), (key, summary)
    assert summary["wall_s"] > 0 and summary["work_s"] > 0
    merged = [e for e in events if e["type"] == "merge.finished"]
    assert [(e["task"], e["result"]) for e in merged] == [("ok", "merged")]


def test_plain_output_is_timestamped_lines_then_a_summary(runs: TwoRuns) -> None:
    assert_clean_exit(runs.second, 1)
    lines = runs.second.out.splitlines()
    summary_at = next(i for i, line in enumerate(lines) if line.startswith(f"run {runs.second_id} failed")
                      and not re.match(r"^\d\d:\d\d:\d\d ", line))
    events, summary = lines[:summary_at], "\n".join(lines[summary_at:])
    assert len(events) >= 8
    for line in events:  # one event per line, even when an agent's error detail spans lines
        assert re.match(r"^\d\d:\d\d:\d\d \S", line), f"not a timestamped line: {line!r}"
    assert any(re.match(r"^\d\d:\d\d:\d\d solo +merged$", line) for line in events)
    assert "speedup" in summary and "1/2 merged" in summary
    assert "did not merge:" in summary and "orchard retry" in summary  # the end screen's next steps
    assert "orchard land --partial" in summary and "land with" not in summary  # a task failed: only what merged
    assert not runs.second.out.lstrip().startswith("{")


# ---- logs -------------------------------------------------------------------------------------------------------


def test_logs_print_agent_output_with_attempt_header(runs: TwoRuns) -> None:
    result = run_orchard("logs", "ok", "--run", runs.first_id, cwd=runs.repo)
    assert_clean_exit(result, 0)
    assert "marker-123" in result.out
    assert re.search(r"^── attempt 1 · .*ok\.1\.log$", result.out, re.M), result.out

    latest = run_orchard("logs", "solo", cwd=runs.repo)  # default: the latest run
    assert_clean_exit(latest, 0)
    assert "marker-456" in latest.out and "marker-123" not in latest.out

    one = run_orchard("logs", "bad", "--run", runs.first_id, "--attempt", "1", cwd=runs.repo)
    assert_clean_exit(one, 0)
    assert "about to fail" in one.out and "── attempt 1" in one.out


def test_logs_errors_exit_2(runs: TwoRuns) -> None:
    unknown = run_orchard("logs", "nope", cwd=runs.repo)
    assert_clean_exit(unknown, 2)
    assert "nope" in unknown.err

    not_in_latest = run_orchard("logs", "ok", cwd=runs.repo)  # 'ok' belongs to the first run only
    assert_clean_exit(not_in_latest, 2)

    no_attempt = run_orchard("logs", "ok", "--run", runs.first_id, "--attempt", "7", cwd=runs.repo)
    assert_clean_exit(no_attempt, 2)
    assert "attempt 7" in no_attempt.err

    never_ran = run_orchard("logs", "after", "--run", runs.first_id, cwd=runs.repo)
    assert_clean_exit(never_ran, 2)
    assert "no attempts" in never_ran.err


def test_logs_follow_on_a_finished_run_returns_promptly(runs: TwoRuns) -> None:
    started = time.monotonic()
    result = run_orchard("logs", "--follow", "solo", cwd=runs.repo, timeout=20)
    assert time.monotonic() - started < 8
    assert_clean_exit(result, 0)
    assert "marker-456" in result.out and "── attempt 1" in result.out


# ---- exit codes -------------------------------------------------------------------------------------------------


def test_exit_codes_for_bad_input(orchard: Callable[..., Result], write_plan: Callable[..., Path],
                                  tmp_path: Path) -> None:
    good = write_plan(plan_text(task("a", "@write a.txt a")))
    typo = write_plan(plan_text(task("a", "@write a.txt a", extra="    depend_on: [b]\n")), name="typo.yaml")

    invalid = orchard("run", "--json", str(typo))
    assert_clean_exit(invalid, 2)
    assert "depend_on" in invalid.err and "did you mean" in invalid.err
    assert invalid.out == ""  # --json keeps stdout for NDJSON only

    missing = orchard("run", str(tmp_path / "nope.yaml"))
    assert_clean_exit(missing, 2)
    assert "nope.yaml" in missing.err

    bad_option = orchard("run", "--parallel", "0", str(good))
    assert_clean_exit(bad_option, 2)
    assert "--parallel" in bad_option.err

    unknown_command = orchard("frobnicate")
    assert_clean_exit(unknown_command, 2)

    odd = orchard("run", str(tmp_path / "[/draft]" / "[bold]plan.yaml"))  # brackets are not markup
    assert_clean_exit(odd, 2)
    assert "[/draft]/[bold]plan.yaml" in odd.err


# ---- plan preview -----------------------------------------------------------------------------------------------


def test_plan_preview_text(orchard: Callable[..., Result], write_plan: Callable[..., Path]) -> None:
    tasks = (task("models", "x", extra="    estimate: 10m\n    files: ['src/models/**']\n")
             + task("api", "x", extra="    estimate: 5m\n    files: ['src/models/user.py']\n")
             + task("docs", "x", extra="    estimate: 2m\n")
             + task("tests", "x", extra="    estimate: 3m\n    depends_on: [models, docs]\n"))
    plan = write_plan(plan_text(tasks), name="[v2]plan.yaml")
    result = orchard("plan", str(plan))
    assert_clean_exit(result, 0)
    out = result.out
    assert f"{plan}: 4 tasks, valid" in out
    assert re.search(r"wave 1: models, api, docs", out) and re.search(r"wave 2: tests", out), out
    assert re.search(r"critical path: models → tests \(13m", out), out
    assert "estimated makespan at parallel 2" in out
    assert re.search(r"api ↔ models|models ↔ api", out), out


def test_plan_json_and_parallel_change_the_makespan(orchard: Callable[..., Result],
                                                    write_plan: Callable[[str], Path]) -> None:
    plan = write_plan(plan_text("".join(task(f"t{i}", "x", extra="    estimate: 10m\n") for i in range(4))))
    docs = {}
    for width in (1, 4):
        result = orchard("plan", "--json", "--parallel", str(width), str(plan))
        assert_clean_exit(result, 0)
        docs[width] = result.json()
    for doc in docs.values():
        assert {"waves", "critical_path", "estimated_makespan_s", "file_overlaps"} <= set(doc)
        assert doc["waves"] == [["t0", "t1", "t2", "t3"]] and doc["file_overlaps"] == []
    assert docs[1]["estimated_makespan_s"] == pytest.approx(2400)
    assert docs[4]["estimated_makespan_s"] == pytest.approx(600)


def test_plan_invalid_exits_2(orchard: Callable[..., Result], write_plan: Callable[[str], Path]) -> None:
    result = orchard("plan", str(write_plan(plan_text(task("a", "x", extra="    depends_on: [ghost]\n")))))
    assert_clean_exit(result, 2)
    assert "ghost" in result.err


# ---- the user's checkout ----------------------------------------------------------------------------------------


def checkout_state(repo: Path) -> dict[str, str | None]:
    """HEAD, index bytes, status (incl. untracked and ignored) and stash, minus orchard's own directory."""
    snap = snapshot_checkout(repo)
    status = snap["status"] or ""
    snap["status"] = "\0".join(e for e in status.split("\0") if not e.startswith("!! .orchard/"))
    return snap


def test_run_leaves_the_users_checkout_untouched(orchard: Callable[..., Result], write_plan: Callable[[str], Path],
                                                 repo: Path) -> None:
    (repo / "README.md").write_text("# user edit, not committed\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    (repo / "untracked.txt").write_text("mine\n")
    before = checkout_state(repo)
    tasks = task("a", "@write README.md rewritten by a\n@write a.txt a") + task("b", "@write staged.txt b")
    result = orchard("run", str(write_plan(plan_text(tasks))))
    assert_clean_exit(result, 0)
    assert checkout_state(repo) == before
    assert (repo / "README.md").read_text() == "# user edit, not committed\n"
    assert not (repo / "a.txt").exists()
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"


# ---- rendering agent text ---------------------------------------------------------------------------------------


def test_dashboard_and_status_table_show_agent_text_literally() -> None:
    """Agent output and errors may contain `[...]`: shown as is, even on a console that reads markup."""
    snap = Snapshot()
    now = time.time()
    snap.apply(RunStarted(run_id="r1", ts=now, base="main", base_commit="0" * 40, integration_branch="i", tasks=1,
                          parallel=1))
    snap.apply(TaskStatusChanged(run_id="r1", ts=now, task="t", status=TaskStatus.RUNNING, attempt=1))
    snap.apply(AttemptStarted(run_id="r1", ts=now, task="t", attempt=1, agent="fake", branch="b", worktree="w",
                              start_commit="0" * 40))
    snap.apply(AgentActivity(run_id="r1", ts=now, task="t", attempt=1, text="[/x] edit [bold]src"))
    doc = {"run": {"id": "r1", "status": "failed", "integration_branch": "i"},
           "tasks": [{"id": "t", "status": "failed", "agent": "fake", "attempts": 1, "duration_s": 1.0,
                      "cost_usd": 0.0, "error": "agent_error: [/usr/lib] [red]boom"}]}
    for renderable, expected in ((render(snap, now + 1), "[/x] edit [bold]src"),
                                 (status_table(doc), "[/usr/lib] [red]boom")):
        buffer = io.StringIO()
        Console(file=buffer, width=200, markup=True, color_system=None).print(renderable)
        assert expected in buffer.getvalue()
