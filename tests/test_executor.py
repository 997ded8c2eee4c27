"""The executor seam (issue 16, item 1): an attempt's workspace half is one function of a job value, a host and a
sink, with no run context, journal or store; the local executor runs it, and every run test covers it that way."""

from __future__ import annotations

import ast
import asyncio
import os
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchard.agents.base import Stream
from orchard.core.journal import AgentExit, VerifyRun
from orchard.core.model import Outcome
from orchard.core.redact import Redactor
from orchard.plan import load
from orchard.runtime.context import Host, LiveProcesses
from orchard.runtime.executor import LocalExecutor
from orchard.runtime.layout import task_branch
from orchard.runtime.pool import WorktreePool
from orchard.runtime.sandbox import Sandboxing
from orchard.runtime.session import open_repo
from orchard.runtime.workspace import AttemptJob
from orchard.vcs.private import open_own_repository
from tests.conftest import git
from tests.test_engine_acceptance import plan_text, task

WORKSPACE = Path(__file__).resolve().parent.parent / "src" / "orchard" / "runtime" / "workspace.py"


class Recorder:
    """A sink that keeps what it is told, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def placed(self, host: str) -> None:
        self.calls.append(("placed", host))

    def repaired(self, paths: list[str], when: str) -> None:
        self.calls.append(("repaired", paths))

    def started(self, worktree: Path, start_commit: str) -> None:
        self.calls.append(("started", (worktree, start_commit)))

    def setup_started(self, command: str) -> None:
        self.calls.append(("setup_started", command))

    def setup_finished(self, *, passed: bool, skipped: bool, duration_s: float, detail: str) -> None:
        self.calls.append(("setup_finished", passed))

    def activity(self, text: str) -> None:
        self.calls.append(("activity", text))

    def output(self, stream: Stream, line: str) -> None:
        self.calls.append(("output", line))

    def spawned(self, pid: int) -> None:
        self.calls.append(("spawned", pid))

    def agent_exited(self, exited: AgentExit) -> None:
        self.calls.append(("agent_exited", exited))

    def verifying(self) -> None:
        self.calls.append(("verifying", None))

    def verify_finished(self, run: VerifyRun) -> None:
        self.calls.append(("verify_finished", run))

    def warned(self, text: str, others: tuple[str, ...]) -> None:
        self.calls.append(("warned", text))

    def noted(self, text: str) -> None:
        self.calls.append(("noted", text))

    def teardown_finished(self, *, passed: bool, duration_s: float, detail: str) -> None:
        self.calls.append(("teardown_finished", passed))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls if name not in ("activity", "output", "placed")]


def job_for(repo: Path, plan_file: Path, task_id: str, *, secret: str) -> tuple[AttemptJob, Host]:
    plan = load(plan_file)
    user, layout = open_repo(repo)
    own = open_own_repository(user, layout.git_dir)
    processes = LiveProcesses()
    host = Host(own, layout, WorktreePool(own.repo, layout), processes, Redactor({"API_TOKEN": secret}),
                dict(os.environ))
    spec = plan.agents["fake"]
    job = AttemptJob(run_id="r1", task=plan.task(task_id), number=1, agent_name="fake", agent=spec,
                     sandboxing=Sandboxing.of(plan, spec), environment=plan.environment_of(task_id),
                     branch=task_branch("r1", task_id), link=layout.worktree("r1", task_id),
                     log_path=layout.log("r1", task_id, 1), prompt_file=layout.prompt_file("r1", task_id, 1),
                     outbox=layout.outbox("r1", task_id, 1), tip=git(repo, "rev-parse", "HEAD").strip(),
                     feedback="the last attempt forgot the file", output=True)
    return job, host


def test_the_workspace_half_runs_an_attempt_with_no_journal_and_tells_its_sink_in_order(
        repo: Path, tmp_path: Path) -> None:
    secret = "s3cret-for-the-node-123"
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(plan_text(task("a", f"@print {secret}\n@write a.txt made", "    verify: [test, -f, a.txt]\n")))
    job, host = job_for(repo, plan_file, "a", secret=secret)
    assert pickle.loads(pickle.dumps(job)) == job  # a value: it can travel to another machine as it is

    sink = Recorder()
    result = asyncio.run(LocalExecutor(host).run(job, sink))

    assert result.started and result.verdict.outcome is Outcome.SUCCESS, result.verdict
    assert sink.names() == ["started", "spawned", "agent_exited", "verifying", "verify_finished"]
    (worktree, start), = [value for name, value in sink.calls if name == "started"]
    assert start == job.tip and Path(worktree).is_dir()
    end = result.verdict.end_commit
    assert end and git(repo / ".orchard" / "git", "show", f"{end}:a.txt") == "made"
    assert git(repo / ".orchard" / "git", "rev-parse", f"refs/heads/{job.branch}").strip() == end
    verify_run = next(value for name, value in sink.calls if name == "verify_finished")
    assert verify_run.passed
    # the prompt the agent read carries the job's feedback; what left the host is redacted there
    assert "the last attempt forgot the file" in job.prompt_file.read_text()
    lines = [value for name, value in sink.calls if name == "output"]
    assert any("[REDACTED:API_TOKEN]" in line for line in lines) and not any(secret in line for line in lines)
    assert secret not in job.log_path.read_text()
    assert host.pool.parked() and not job.link.exists()  # a success parks its worktree for the next task


def test_a_worktree_that_cannot_be_prepared_is_no_start(repo: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(plan_text(task("a", "@write a.txt made")))
    job, host = job_for(repo, plan_file, "a", secret="unused-secret-value")
    missing = replace(job, tip="0" * 40)
    sink = Recorder()
    result = asyncio.run(LocalExecutor(host).run(missing, sink))
    assert not result.started and result.verdict.outcome is Outcome.SETUP_FAILED
    assert "cannot prepare worktree" in result.verdict.detail and sink.names() == []


def test_the_workspace_module_sees_no_run_context_journal_or_store() -> None:
    tree = ast.parse(WORKSPACE.read_text())
    imported = {(node.module or "", alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not [m for m, _ in imported if m.startswith("orchard.store")]
    assert not {"RunContext", "RunJournal", "Journal", "Records"} & ({n for _, n in imported} | names)
    assert "ctx" not in names
