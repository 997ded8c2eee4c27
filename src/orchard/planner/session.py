"""`orchard draft`'s rounds: the planner writes a draft, orchard checks it, the problems go back (into the same
session where the agent can resume one, else in a fresh prompt quoting the draft), and the plan is written only once
a draft is valid. Nothing of the plan runs: no run is recorded, no branch or task worktree is made.
"""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchard import plan as plan_loader
from orchard.agents import AttemptReport
from orchard.core.model import AgentSpec, Outcome, Plan
from orchard.core.safe_text import safe_line
from orchard.errors import DraftFailed, EnvironmentProblem, UsageError
from orchard.plan import YAML_SUFFIXES
from orchard.planner.agent import Turn, ask, confinement_mode, new_run_id
from orchard.planner.check import Checked, Target, check_draft
from orchard.planner.config import AgentsConfig, read_only, task_agent
from orchard.planner.prompt import PlannerBrief, feedback, first_prompt, revision_prompt
from orchard.planner.scratch import Scratch, scratch_worktree
from orchard.vcs import Repo, resolve_commit

DEFAULT_DRAFTS = 3  # the first draft and up to two revisions
DEFAULT_MAX_TASKS = 20
DEFAULT_TIMEOUT_S = 15 * 60.0  # one planner turn


@dataclass(frozen=True)
class DraftRequest:
    """One `orchard draft`."""

    goal: str
    repo: Repo
    config: AgentsConfig
    planner: AgentSpec  # as configured: its kind's read-only settings are forced here
    out: Path
    max_tasks: int = DEFAULT_MAX_TASKS
    drafts: int = DEFAULT_DRAFTS
    base: str | None = None
    force: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    on_progress: Callable[[str], None] | None = None  # what the planner does, and each draft's verdict


@dataclass(frozen=True)
class DraftResult:
    """A written plan and how it came about."""

    path: Path
    plan: Plan
    planner: str  # the agent that wrote it
    drafts: int
    rejected: tuple[tuple[str, ...], ...]  # each earlier draft's problems
    warnings: tuple[str, ...] = ()
    cost_usd: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0


@dataclass
class _Tally:
    """What the rounds so far produced."""

    rejected: list[tuple[str, ...]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    reports: list[AttemptReport] = field(default_factory=list)


def check_out(out: Path, *, force: bool) -> None:
    """Refuse, before any agent runs, an output the plan could not be written to."""
    if out.suffix.lower() not in YAML_SUFFIXES:
        raise UsageError(f"--out {out}: a plan file ends in .yaml or .yml")
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory")
    if out.exists() and not force:
        raise UsageError(f"--out {out}: exists; choose another file or pass --force to overwrite it")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: no directory {out.parent}")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {out.parent} is not writable")


@dataclass(frozen=True)
class _Session:
    """Where and how the planner's turns run."""

    scratch: Scratch
    commit: str
    confined: bool
    run_id: str


def draft(request: DraftRequest) -> DraftResult:
    """Draft, check and write a plan for `request.goal`; DraftFailed when no valid draft came of it."""
    check_out(request.out, force=request.force)
    commit = resolve_commit(request.repo, request.base or "HEAD")
    planner = read_only(request.planner)
    confined, warning = confinement_mode(planner)
    tally = _Tally(warnings=[warning] if warning else [])
    with scratch_worktree(request.repo, commit) as scratch:
        return _rounds(request, planner, _Session(scratch, commit, confined, new_run_id()), tally)


def _rounds(request: DraftRequest, planner: AgentSpec, session: _Session, tally: _Tally) -> DraftResult:
    """Turn after turn until a draft is valid (written) or the drafts run out (DraftFailed)."""
    default_agent = task_agent(request.config, planner)
    brief = PlannerBrief(request.goal, [(n, s.type) for n, s in request.config.specs.items()], default_agent,
                         request.max_tasks, session.commit)
    target = Target(request.config, request.out.resolve(), request.repo.root, request.max_tasks, default_agent,
                    request.base, header(request.goal, planner.name, request.out))
    first = first_prompt(brief)
    turn = Turn(1, first)
    for number in range(1, request.drafts + 1):
        report = asyncio.run(ask(planner, turn, scratch=session.scratch, repo=request.repo, run_id=session.run_id,
                                 confined=session.confined, timeout_s=request.timeout_s,
                                 on_activity=request.on_progress))
        tally.reports.append(report)
        if report.outcome is not Outcome.SUCCESS:
            raise DraftFailed(f"the planner ({planner.name}) ended {report.outcome.value} on draft {number}: "
                              f"{report.detail or 'no detail'}; nothing was written", tally.rejected)
        checked = check_draft(report.summary, target)
        tally.warnings += [w for w in checked.warnings if w not in tally.warnings]
        if checked.plan is not None:
            return _written(request, checked, number, tally)
        tally.rejected.append(checked.problems)
        if request.on_progress is not None and number < request.drafts:
            request.on_progress(f"draft {number}: {_count(checked.problems)}; asking for a revision")
        notes = feedback(checked.problems, draft_number=number, drafts=request.drafts)
        turn = Turn(number + 1, revision_prompt(first, checked.answer, notes), notes,
                    report.session_id or turn.session_id)
    last = "".join(f"\n  - {p}" for p in tally.rejected[-1])
    raise DraftFailed(f"no valid plan after {request.drafts} draft{'s' if request.drafts != 1 else ''}; nothing was "
                      f"written. The last draft's problems:{last}", tally.rejected)


def _count(problems: Sequence[str]) -> str:
    return f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"


def header(goal: str, planner: str, out: Path) -> str:
    """The comment at the top of a written plan: where it came from and what to do with it."""
    lines = [f"# Drafted by `orchard draft` (planner: {safe_line(planner)}) for the goal:"]
    lines += [f"#   {safe_line(line)}" for line in goal.strip().splitlines() or [""]]
    lines.append(f"# Review it, then: orchard plan {safe_line(out.name)} · orchard run {safe_line(out.name)}")
    return "\n".join(lines) + "\n"


def _written(request: DraftRequest, checked: Checked, number: int, tally: _Tally) -> DraftResult:
    """Write the valid draft and load it back from where it now is (its `source` is the written file)."""
    path = write_plan(checked.text, request.out, force=request.force, like=Path(request.config.source))
    plan = plan_loader.load(path, request.repo.root)
    return DraftResult(path, plan, request.planner.name, number, tuple(tally.rejected), tuple(tally.warnings),
                       sum(r.cost_usd for r in tally.reports), sum(r.tokens_in for r in tally.reports),
                       sum(r.tokens_out for r in tally.reports))


def write_plan(text: str, out: Path, *, force: bool, like: Path) -> Path:
    """Write `text` to `out` with the permissions of `like` (the agents file, whose `agents:` section and any
    secrets in its `env` the plan now carries): a new file only, unless `force`, then replaced atomically."""
    try:
        mode = stat.S_IMODE(like.stat().st_mode) & 0o666 or 0o600
    except OSError:
        mode = 0o600
    try:
        _write(text, out, force=force, mode=mode)
    except FileExistsError:
        raise UsageError(f"--out {out}: appeared while the planner worked; nothing was written") from None
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def _write(text: str, out: Path, *, force: bool, mode: int) -> None:
    if not force:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    fd, staged = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(staged, mode)
        os.replace(staged, out)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
