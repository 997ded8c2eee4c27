"""The plan as it is now (issue 14, item 6): `resume` and `retry` say how the plan file changed since the run
started, and `--reload` takes the changes for the tasks that have not merged, recorded in the journal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from orchard.core.model import TaskStatus
from orchard.core.plan_diff import plan_changes, reloaded
from orchard.plan import load
from tests.conftest import Result, git, query
from tests.test_cli import assert_clean_exit, plan_text, run_id_of, task

S = TaskStatus


def plan_at(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_changes_are_named_by_kind_and_merged_tasks_never_change(tmp_path: Path) -> None:
    before = load(plan_at(tmp_path / "a.yaml", plan_text(
        task("done", "@write d.txt d") + task("wrong", "@exit 1") + task("gone", "@write g.txt g")
        + task("later", "@write l.txt l", extra="    depends_on: [wrong]\n"))))
    after = load(plan_at(tmp_path / "b.yaml", plan_text(
        task("done", "@write d.txt CHANGED") + task("wrong", "@write w.txt fixed")
        + task("later", "@write l.txt l", extra="    depends_on: [wrong]\n    retries: 3\n")
        + task("new", "@write n.txt n"))))
    changes = plan_changes(before, after)
    assert (changes.prompts, changes.added, changes.removed) == (("done", "wrong"), ("new",), ("gone",))
    assert dict(changes.other) == {"later": ("retries",)}
    assert changes.summary() == ("2 tasks' prompts (done, wrong), 1 task's retries (later), 1 new task (new), "
                                 "1 removed task (gone)")
    assert plan_changes(before, before).empty

    statuses = {"done": S.MERGED, "wrong": S.FAILED, "gone": S.PENDING, "later": S.BLOCKED}
    reload = reloaded(before, after, statuses)
    assert reload.plan.task("done") == before.task("done")  # merged: as it ran, whatever the file says now
    assert reload.plan.task("wrong").prompt == after.task("wrong").prompt
    assert reload.plan.task("later").retries == 3 and "new" in reload.plan
    assert "gone" in reload.plan and reload.cancel == ("gone",) and reload.kept == ("done",)
    assert reload.plan.source == before.source
    said = reload.said("plan.yaml")
    assert said.startswith("reloaded plan.yaml: 2 tasks' prompts") and "cancelled gone" in said
    assert "kept done as merged" in said


def test_retry_says_the_plan_changed_and_retry_reload_picks_up_an_edited_prompt(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    first = plan_text(task("ok", "@write ok.txt ok") + task("bad", "@exit 3")
                      + task("after", "@write after.txt a", extra="    depends_on: [bad]\n"))
    plan = write_plan(first)
    run = orchard("run", str(plan))
    assert_clean_exit(run, 1)
    run_id = run_id_of(run)

    plan.write_text(first.replace("@exit 3", "@write bad.txt fixed") + task("extra", "@write extra.txt e"))
    unchanged = orchard("retry", "bad")  # the snapshot still says @exit 3: it fails again, and says why
    assert_clean_exit(unchanged, 1)
    assert "changed since the run started: 1 task's prompt (bad), 1 new task (extra)" in unchanged.out
    assert "--reload" in unchanged.out

    reloaded_run = orchard("retry", "--reload", "bad")
    assert_clean_exit(reloaded_run, 0)
    statuses = {t["id"]: t["status"] for t in orchard("status", "--json").json()["tasks"]}
    assert statuses == {"ok": "merged", "bad": "merged", "after": "merged", "extra": "merged"}
    assert git(repo, "show", f"orchard/{run_id}/integration:bad.txt") == "fixed"
    notes = [row[0] for row in query(repo, "SELECT data FROM events WHERE run_id = ? AND type = 'run.note'",
                                     run_id) if "reloaded" in row[0]]
    assert len(notes) == 1 and "1 task's prompt (bad)" in notes[0]

    again = orchard("resume", "--reload")  # the snapshot is the reloaded plan now: nothing changed, nothing to do
    assert_clean_exit(again, 2)
    assert "changed since" not in again.out


def test_resume_reload_cancels_a_removed_task_and_refuses_a_broken_file(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    text = plan_text(task("ok", "@write ok.txt ok") + task("bad", "@exit 3"))
    plan = write_plan(text)
    assert_clean_exit(orchard("run", str(plan)), 1)

    plan.write_text(text + "  - {id: broken, depends_on: [nowhere], prompt: x}\n")
    refused = orchard("retry", "--reload", "bad")
    assert_clean_exit(refused, 2)
    assert "nowhere" in refused.err and "broken" in refused.err

    plan.write_text(plan_text(task("ok", "@write ok.txt ok")))  # bad is gone from the file
    resumed = orchard("resume", "--reload")
    assert_clean_exit(resumed, 0)
    tasks = {t["id"]: t for t in orchard("status", "--json").json()["tasks"]}
    assert tasks["bad"]["status"] == "cancelled" and "removed from" in tasks["bad"]["error"]
    assert tasks["ok"]["status"] == "merged" and tasks["ok"]["attempts"] == 1
