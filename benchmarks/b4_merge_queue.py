"""B4 — the merge queue on the large repository: 200 task branches with disjoint changes (`--quick`: 50 on the
5,000-file repository).

The tasks are staged the way an interrupted run leaves them when every attempt has succeeded and the merge queue
has not drained yet: recorded through orchard's journal as `merging`, each with its task branch (one commit changing
one file of its own on top of `main`). `orchard.resume` then drains the queue — the production engine, scheduler
and merge step (`merge-tree --write-tree`, `commit-tree`, `update-ref`, tidy-up), one merge at a time. Per merge:
(last `merge.finished` − `run.started`) / tasks, from the events.

Baseline in the same run: `git merge --no-ff` of the same commits, one after another, in a checkout of the same
repository (40 of them, `--quick` 10; half before orchard and half after). The user's checkout is snapshotted
before and after orchard (`orchard.testing.snapshot_checkout`: HEAD, index bytes, status, stash — orchard's own
`.orchard/` left out, as in the test suite): it must not change.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import orchard
from benchmarks import large_repo
from benchmarks.common import Config, EventLog, Result, Target, fake_agent_spec, git, merge_queue_busy
from benchmarks.profiling import GitCalls
from orchard.core.journal import Counts
from orchard.core.model import AgentSpec, Plan, RunStatus, Task
from orchard.runtime.layout import integration_branch, task_branch
from orchard.runtime.session import new_run_id, open_journal, open_repo
from orchard.store import Store
from orchard.testing import snapshot_checkout
from orchard.vcs import create_branch


def stage_run(repo: large_repo.LargeRepo, count: int) -> str:
    """Record a run whose `count` tasks all wait in the merge queue, their branches ready; returns its id."""
    spec = fake_agent_spec()
    agent = AgentSpec(spec["name"], spec["type"], options=spec["options"])
    tasks = [Task(id=f"t{i:03d}", prompt=f"change file {i}", agent=agent.name) for i in range(count)]
    plan = Plan.build(tasks, {agent.name: agent}, parallel=1, source="<b4>")
    vrepo, layout = open_repo(repo.root)
    store = Store(layout.state_db)
    run_id = new_run_id()
    try:
        journal = open_journal(store, run_id, plan=plan)
        journal.run_started(plan=plan, base="main", base_commit=repo.base,
                            integration_branch=integration_branch(run_id), parallel=1, pid=os.getpid())
        create_branch(vrepo, integration_branch(run_id), repo.base)
        refs = "".join(f"create refs/heads/{task_branch(run_id, t.id)} {repo.b4_commits[i]}\n"
                       for i, t in enumerate(tasks))
        git(repo.root, "update-ref", "--stdin", input=refs.encode())
        with journal.atomic():
            for t in tasks:
                journal.task_started(t.id, counts=Counts(1, 0), branch=task_branch(run_id, t.id))
                journal.task_merging(t.id, counts=Counts(1, 0))
            journal.run_finished(RunStatus.INTERRUPTED, reason="interrupted")
    finally:
        store.close()
    return run_id


def checkout_state(repo: large_repo.LargeRepo) -> dict[str, str | None]:
    """HEAD, index bytes, status (untracked and ignored included) and stash of the user's checkout, minus
    orchard's own `.orchard/` directory (the same check as the test suite's)."""
    snap = snapshot_checkout(repo.root)
    status = snap["status"] or ""
    snap["status"] = "\0".join(e for e in status.split("\0") if not e.startswith("!! .orchard/"))
    return snap


def baseline_merges(repo: large_repo.LargeRepo, first: int, count: int) -> list[float]:
    """`git merge --no-ff` of task commits into the checked-out branch `bench/merge`, each timed."""
    root = repo.root
    if first == 0:
        git(root, "checkout", "-q", "-B", "bench/merge", repo.base)
    else:
        git(root, "checkout", "-q", "bench/merge")
    times = []
    for i in range(first, first + count):
        t = time.perf_counter()
        subprocess.run(["git", "-C", str(root), "merge", "--quiet", "--no-ff", "--no-edit", "-m", f"merge t{i:03d}",
                        repo.b4_commits[i]], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    git(root, "checkout", "-q", "main")
    return times


def run(cfg: Config) -> list[Result]:
    files, size = (5_000, 20_000_000) if cfg.quick else (50_000, 200_000_000)
    count, base_count = (50, 10) if cfg.quick else (200, 40)
    repo = large_repo.ensure(cfg.cache, files, size, cfg.say)
    try:
        cfg.say(f"  B4: baseline, git merge of {base_count // 2} branches in a checkout …")
        baseline = baseline_merges(repo, 0, base_count // 2)
        run_id = stage_run(repo, count)
        before = checkout_state(repo)
        cfg.say(f"  B4: orchard, draining a merge queue of {count} tasks …")
        events = EventLog()
        with GitCalls() as calls:
            t = time.perf_counter()
            result = orchard.resume(repo.root, run_id, on_event=events)
            wall = time.perf_counter() - t
        after = checkout_state(repo)
        changed = int(git(repo.root, "diff", "--shortstat", repo.base, f"refs/heads/{integration_branch(run_id)}")
                      .split()[0] or 0)
        cfg.say(f"  B4: baseline, git merge of {base_count - base_count // 2} more …")
        baseline += baseline_merges(repo, base_count // 2, base_count - base_count // 2)
    finally:
        large_repo.reset(repo)
    if result.status != "completed" or changed != count:
        raise RuntimeError(f"orchard resume ended {result.status}; {changed} files changed, expected {count}")
    started = events.of("run.started")[0]["t"]
    last = max(e["t"] for e in events.of("merge.finished"))
    per_merge = (last - started) / count
    per_base = sum(baseline) / len(baseline)
    untouched = before == after
    size_note = [f"--quick: {count} branches on {files:,} files, not 200 on 50,000"] if cfg.quick else []
    details: dict[str, Any] = {
        "tasks": count, "files": repo.files, "orchard_resume_wall_s": wall, "per_merge_s": per_merge,
        "merge_queue": merge_queue_busy(events.events), "baseline_merges": len(baseline),
        "baseline_per_merge_s": per_base, "baseline_min_s": min(baseline), "baseline_max_s": max(baseline),
        "orchard_git_calls": calls.table(count),
        "orchard_git_by_step": calls.steps(count)}
    return [
        Result("B4", f"merge queue on a large repo: {count} disjoint branches, per merge (vs git merge in a checkout)",
               measured=per_merge, baseline=per_base, ratio=per_merge / per_base, target=Target("<=", 0.20),
               details=details, notes=[f"baseline: {len(baseline)} merges ({base_count // 2} before orchard, "
                                       "the rest after)", *size_note]),
        Result("B4", "merge queue: the user's checkout is untouched (HEAD, index, status, stash)",
               measured=1.0 if untouched else 0.0, target=Target(">=", 1.0, on="measured", label="untouched"),
               measured_text="untouched" if untouched else "CHANGED", baseline_text="—", unit="",
               details={} if untouched else {"before": before, "after": after}),
    ]
