"""`orchard run --dry-run` and `orchard.run(dry_run=True)`: the whole run with no agent, setup, verify or gate
process, real worktrees and merges into an integration branch that is removed at the end, nothing recorded.

Every agent, setup, verify and gate command of the plans here would leave a marker file if it ran; the plans run
unconfined (`sandbox: none`), so nothing would stop one from leaving it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import orchard
from orchard import plan as plan_loader
from orchard.core.events import OrchardEvent
from orchard.core.model import Plan
from orchard.errors import PlanError, UsageError
from orchard.runtime.dryrun import NOOP, dry_run_plan
from orchard.runtime.layout import Layout
from tests.conftest import FAKE_AGENT, PYTHON, git, own_git, query, run_orchard
from tests.test_engine_acceptance import checkout_state, task


def touching(path: Path) -> str:
    """A command (YAML flow list) that creates `path`."""
    return f'["{PYTHON}", "-c", "open(\'{path}\', \'w\').close()"]'


def dry_plan_text(marks: Path, tasks: str, parallel: int = 4) -> str:
    """A plan whose agent, setup, every task's verify and the gate each leave a marker in `marks` when they run."""
    return (f"parallel: {parallel}\nsandbox: none\nintegration_verify: {touching(marks / 'gate')}\n"
            f"environment: {{include: [notes.txt], setup: [{touching(marks / 'setup')}]}}\n"
            f"defaults: {{agent: fake, retries: 0, verify: {touching(marks / 'verify')}}}\n"
            f'agents:\n  fake: {{type: command, command: ["{PYTHON}", "{FAKE_AGENT}", "{{prompt_file}}"], '
            f"max_parallel: 3}}\ntasks:\n{tasks}")


def ten_tasks(marks: Path) -> str:
    """Three waves: a0…a4, then b0…b3 (each after two a's), then c after every b."""
    def work(name: str) -> str:
        return f"@touch {marks / ('agent-' + name)}\n@write out/{name}.txt made by {name}"

    waves = "".join(task(f"a{i}", work(f"a{i}")) for i in range(5))
    waves += "".join(task(f"b{i}", work(f"b{i}"), f"    depends_on: [a{i}, a{i + 1}]\n") for i in range(4))
    return waves + task("c", work("c"), "    depends_on: [b0, b1, b2, b3]\n")


DEPENDS = {**{f"b{i}": (f"a{i}", f"a{i + 1}") for i in range(4)}, "c": ("b0", "b1", "b2", "b3")}


@pytest.fixture
def dirty(repo: Path) -> Path:
    """The test repository with uncommitted work of the user's: an untracked file and a modified one."""
    (repo / "notes.txt").write_text("uncommitted user work\n")
    (repo / "README.md").write_text("# test repo\nedited, not committed\n")
    return repo


def orchard_refs(repo: Path) -> str:
    """Every `orchard/*` branch of a repository, as `git branch --list` shows them."""
    return git(repo, "branch", "--list", "orchard/*")


def tree(repo: Path, commit: str) -> str:
    """The tree of `commit` in orchard's repository."""
    return git(own_git(repo), "rev-parse", f"{commit}^{{tree}}").strip()


def test_dry_run_runs_no_process_removes_its_branches_and_prints_the_summary(
        dirty: Path, tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    before = checkout_state(dirty)
    done = run_orchard("run", str(write_plan(dry_plan_text(marks, ten_tasks(marks)))), "--dry-run", cwd=dirty)
    assert done.code == 0, done.err
    assert list(marks.iterdir()) == [], "an agent, setup, verify or gate command ran"
    lines = done.out.splitlines()
    run_id = next(line.split()[2] for line in lines if line.split()[1:2] == ["run"] and "started" in line)
    first = next(i for i, line in enumerate(lines) if line.startswith("dry run: no agent ran"))
    assert f"orchard/{run_id}/integration" in lines[first] and "removed" in lines[first]
    assert lines[first + 1] == f"run {run_id} completed"
    assert lines[first + 2].startswith("tasks: 10/10 merged · 10 attempts")
    assert "land with" not in done.out  # there is nothing to land
    assert orchard_refs(dirty) == "" and orchard_refs(own_git(dirty)) == ""
    assert checkout_state(dirty) == before
    assert not (dirty / ".orchard" / "state.db").exists() and query(dirty, "SELECT id FROM runs") == []
    layout = Layout.for_repo(dirty)
    assert not layout.run_dir(run_id).exists() and not layout.worktrees(run_id).exists()


def test_dry_run_json_keeps_the_order_of_the_real_run(repo: Path, tmp_path: Path,
                                                      write_plan: Callable[[str], Path]) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    done = run_orchard("run", str(write_plan(dry_plan_text(marks, ten_tasks(marks)))), "--dry-run", "--json",
                       cwd=repo)
    assert done.code == 0, done.err
    assert list(marks.iterdir()) == []
    events = done.ndjson()
    kinds = {e["type"] for e in events}
    assert not kinds & {"setup.started", "verify.finished", "preflight.checked", "check.started"}
    assert any(e["type"] == "run.note" and e["text"].startswith("dry run:") for e in events)
    position = {(e["type"], e.get("task")): i for i, e in enumerate(events)}
    for dependent, dependencies in DEPENDS.items():
        for dependency in dependencies:
            assert position[("attempt.started", dependent)] > position[("merge.finished", dependency)], dependent
    finished = [e for e in events if e["type"] == "attempt.finished"]
    assert len(finished) == 10
    assert all((e["outcome"], e["exit_code"], e["cost_usd"]) == ("success", 0, 0.0) for e in finished)
    merges = [e for e in events if e["type"] == "merge.finished"]
    assert len(merges) == 10 and all(e["result"] == "merged" for e in merges)
    assert events[-1]["type"] == "run.finished" and events[-1]["summary"]["merged"] == 10
    assert orchard_refs(repo) == "" and orchard_refs(own_git(repo)) == ""
    assert not (repo / ".orchard" / "state.db").exists()


def test_dry_run_with_land_is_a_usage_error(repo: Path, tmp_path: Path, write_plan: Callable[[str], Path]) -> None:
    done = run_orchard("run", str(write_plan(dry_plan_text(tmp_path, ten_tasks(tmp_path)))), "--dry-run",
                       "--land", cwd=repo)
    assert done.code == 2
    assert "--dry-run" in done.err and "--land" in done.err
    assert orchard_refs(repo) == "" and not (repo / ".orchard").exists()


def test_library_dry_run_merges_empty_changes_and_keeps_nothing(dirty: Path, tmp_path: Path,
                                                                write_plan: Callable[[str], Path]) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    tasks = task("one", f"@touch {marks / 'agent'}") + task("two", f"@touch {marks / 'agent'}",
                                                            "    depends_on: [one]\n")
    plan = plan_loader.load(write_plan(dry_plan_text(marks, tasks)), dirty)
    before = checkout_state(dirty)
    logs: dict[str, str] = {}
    published: list[str] = []
    seen: list[OrchardEvent] = []
    layout = Layout.for_repo(dirty)

    def observe(event: OrchardEvent) -> None:
        seen.append(event)
        data: dict[str, Any] = event.to_dict()
        if data["type"] == "attempt.started":
            published.append(orchard_refs(dirty))
        if data["type"] == "attempt.finished":  # the log is removed with the run: read it now
            logs[data["task"]] = layout.log(event.run_id, data["task"], data["attempt"]).read_text()

    result = orchard.run(plan, repo=dirty, dry_run=True, on_event=observe)
    assert (result.status, result.exit_code, result.summary["merged"]) == ("completed", 0, 2)
    assert list(marks.iterdir()) == []
    assert all(f"orchard/{result.run_id}/integration" in refs for refs in published)  # the user saw it meanwhile
    assert set(logs) == {"one", "two"}
    assert all("dry run" in log and str(FAKE_AGENT) not in log for log in logs.values())
    for merge in (e.to_dict() for e in seen if e.type == "merge.finished"):
        commit = merge["commit"]  # a real merge commit, of a result that changed nothing
        parents = git(own_git(dirty), "rev-parse", f"{commit}^1", f"{commit}^2").split()
        assert len(parents) == 2
        assert git(own_git(dirty), "rev-parse", f"{parents[1]}^{{tree}}", f"{parents[1]}^1^{{tree}}",
                   f"{commit}^{{tree}}", f"{parents[0]}^{{tree}}").split() == [tree(dirty, parents[0])] * 4
    assert orchard_refs(dirty) == "" and orchard_refs(own_git(dirty)) == ""
    assert checkout_state(dirty) == before
    assert not (dirty / ".orchard" / "state.db").exists()
    with pytest.raises(UsageError, match="cannot land"):
        orchard.run(plan, repo=dirty, dry_run=True, land=True)


def test_dry_run_plan_keeps_the_shape_and_drops_every_command(tmp_path: Path,
                                                              write_plan: Callable[[str], Path]) -> None:
    text = dry_plan_text(tmp_path, task("a", "x", "    files: [src/a.py]\n    priority: 3\n")
                         + task("b", "y", "    depends_on: [a]\n    track: t\n"
                                "    environment: {setup: [[make]], teardown: [[make, clean]], include: [.env]}\n")
                         ).replace("sandbox: none", "sandbox: bwrap\npreflight: verify")
    plan = plan_loader.load(write_plan(text))
    dry = dry_run_plan(plan)
    assert isinstance(dry, Plan) and plan.agents["fake"].type == "command"  # the plan itself is untouched
    assert {name: (a.type, a.max_parallel) for name, a in dry.agents.items()} == {"fake": (NOOP, 3)}
    assert [(t.id, t.depends_on, t.files, t.priority, t.track, t.agent) for t in dry.tasks] == [
        (t.id, t.depends_on, t.files, t.priority, t.track, t.agent) for t in plan.tasks]
    assert dry.tracks == plan.tracks and dry.parallel == plan.parallel == 4
    assert all(t.verify is None for t in dry.tasks) and all(t.verify for t in plan.tasks)
    assert (dry.gate, dry.preflight, dry.sandbox) == (None, "off", "none") and plan.gate is not None
    for task_id, include in (("a", ("notes.txt",)), ("b", (".env",))):
        environment = dry.environment_of(task_id)
        assert (environment.setup, environment.teardown, environment.include) == ((), (), include)
    assert dry.task("b") is dry.tasks[1]  # the index is the new tasks'
    noop = tmp_path / "noop.yaml"
    noop.write_text("agents:\n  a: {type: noop}\ntasks:\n  - {id: t, prompt: x}\n")
    with pytest.raises(PlanError, match="unknown agent type 'noop'"):  # orchard's own kind, never a plan's
        plan_loader.load(noop)
