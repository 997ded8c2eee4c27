"""One planner turn: the configured agent, held to reading, run in the scratch worktree through its adapter and
`runtime.process`, its final message taken from the adapter's report (a command agent's from its summary file,
else its standard output).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from orchard.agents import AttemptContext, AttemptReport, adapter_for
from orchard.agents.base import Stream
from orchard.agents.requirements import agent_environment
from orchard.core.model import AgentSpec, Outcome, Task
from orchard.errors import EnvironmentProblem
from orchard.planner.scratch import Scratch
from orchard.runtime.outbox import prepare_outbox, read_summary
from orchard.runtime.process import Supervision, run_process
from orchard.runtime.sandbox import Confinement, bwrap_problem, confine, sandboxed_exit, state_paths
from orchard.vcs import Repo

TASK_ID = "draft"
DEFAULT_STALL_S = 600.0  # as a run's: no output for this long ends the turn `stalled`
STDOUT_LIMIT = 1024 * 1024  # characters of a command agent's standard output kept as its answer


@dataclass(frozen=True)
class Turn:
    """What one planner turn is given: the prompt (the whole of it, for a fresh session) and, for a session that
    resumes, only the feedback and the session to resume."""

    number: int
    prompt: str
    feedback: str = ""
    session_id: str | None = None


def confinement_mode(planner: AgentSpec) -> tuple[bool, str]:
    """(whether the planner runs in bubblewrap, a warning to show or ""). codex never does: its own read-only
    sandbox needs namespaces that cannot nest inside bwrap's. An explicit `sandbox: bwrap` that cannot work here
    is an EnvironmentProblem, as in a run."""
    mode = str(planner.option("sandbox", "auto"))
    if planner.type == "codex" or mode == "none":
        return False, ""
    problem = bwrap_problem()
    if problem is None:
        return True, ""
    if mode == "bwrap":
        raise EnvironmentProblem(f"agents.{planner.name}.sandbox: bwrap was asked for, but {problem}")
    return False, f"sandbox: auto runs the planner unconfined: {problem}"


def new_run_id() -> str:
    """The `ORCHARD_RUN_ID` a draft's agent processes carry (no run of the store has it)."""
    return f"draft-{uuid.uuid4().hex[:12]}"


async def ask(planner: AgentSpec, turn: Turn, *, scratch: Scratch, repo: Repo, run_id: str, confined: bool,
              timeout_s: float, on_activity: Callable[[str], None] | None = None) -> AttemptReport:
    """Run one planner turn to its end; the report's `summary` is the planner's final message."""
    ctx = _context(planner, turn, scratch, run_id, confined)
    adapter = adapter_for(planner.type)
    inv, parser = adapter.invocation(ctx), adapter.parser(ctx)
    stdout: list[str] = []
    kept = [0]

    def on_line(line: str, stream: Stream) -> None:
        activity = parser.feed(line, stream)
        if stream == "stdout" and kept[0] < STDOUT_LIMIT:
            stdout.append(line)
            kept[0] += len(line) + 1
        if activity and on_activity is not None and planner.type != "command":  # a command's stdout is its answer
            on_activity(activity)

    box = _box(planner, ctx, repo) if confined else None
    limits = Supervision(timeout_s, float(planner.option("stall_timeout", DEFAULT_STALL_S)))
    exit_info = await run_process(confine(inv, box), scratch.files / f"agent.{turn.number}.log", on_line, limits,
                                  base_env=agent_environment(os.environ, planner.type, planner.option("env_pass")))
    report = parser.finish(sandboxed_exit(exit_info) if box else exit_info)
    if report.outcome is Outcome.SUCCESS and not report.summary and ctx.outbox is not None:
        report = replace(report, summary=read_summary(ctx.outbox) or "\n".join(stdout))
    return report


def _context(planner: AgentSpec, turn: Turn, scratch: Scratch, run_id: str, confined: bool) -> AttemptContext:
    """The turn as an adapter sees an attempt: its prompt on disk and an empty outbox, both outside the worktree."""
    prompt_file = scratch.files / f"prompt.{turn.number}.md"
    fd = os.open(prompt_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(turn.prompt)
    outbox = scratch.files / f"outbox.{turn.number}"
    prepare_outbox(outbox)
    task = Task(id=TASK_ID, prompt=turn.prompt, agent=planner.name)
    return AttemptContext(run_id=run_id, task=task, attempt=turn.number, agent=planner, worktree=scratch.worktree,
                          prompt=turn.prompt, prompt_file=prompt_file, feedback=turn.feedback,
                          session_id=turn.session_id, confined=confined, outbox=outbox)


def _box(planner: AgentSpec, ctx: AttemptContext, repo: Repo) -> Confinement:
    """bubblewrap's view for a planner: everything read-only (the user's git directory too, so git can read the
    scratch worktree's history) but the scratch worktree, which is thrown away, the outbox and the agent's own
    state directories."""
    extra = [Path(os.path.expanduser(p)) for p in planner.option("writable", ()) or ()]
    writable = (*((ctx.outbox,) if ctx.outbox else ()), *state_paths(planner), *extra)
    return Confinement(ctx.worktree, (ctx.prompt_file, repo.git_dir), writable,
                       str(planner.option("network", "host")) != "none")
