"""B7 — task start with an environment to set up: a generated Python project whose `environment.setup` makes a venv
and installs the project (editable) and its three dependencies from wheels in the repository, 16 independent tasks
at `parallel` 4 (`--quick`: 8), against a fresh `git worktree add` plus the same full setup per task, 4 at a time,
in the same run.

Nothing comes from the network: the three dependencies are generated packages built into wheels here by
`pip wheel --no-index`, through a build backend of a few lines of stdlib Python that the generated packages and the
project carry in their tree (this machine's Python has neither `wheel` nor a setuptools new enough to build without
it, and a venv's own setuptools cannot build a wheel either). The wheels are committed under `wheels/`, so a
sandboxed setup sees them in its worktree.

"Task ready" is the moment the scheduler started the task (`task.status` `running`: it was ready and had a slot),
not its `queued` event: with 16 independent tasks at parallel 4 every task is queued at the run's start, and the
wait for a slot would measure the other tasks' agents, not the start. "Agent started" is the first thing the
agent's process does: it records `time.time()` in a file of its own, in a directory its plan entry makes writable.
The baseline times the same span per task: `git worktree add -b`, the setup commands, and the same agent spawned
directly, from the moment a worker thread took the task.

orchard keeps `.venv` (`keep`) through the pool's reset and skips setup in a reused worktree whose fingerprint
(setup commands, `pyproject.toml` at the start commit) is unchanged. Two orchard runs are measured: the
repository's first run, where each of the 4 pooled worktrees is made and set up once (the cold row, no target), and
a second run of as many tasks on the same repository, the steady state of a repository in use (the target row, as
B3 measures). The baseline runs half before orchard and half after; one untimed baseline task warms the page cache
first. Each agent also asks the venv it was given (`python -P`, so not the working directory) where it imports the
project from, which the details report.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orchard
from benchmarks.common import PYTHON, Config, EventLog, Result, Target, fmt, git, make_repo, scratch
from orchard.core.model import AgentSpec, Environment, Plan, Task
from orchard.testing import pyproject as python_project
from orchard.testing.pyproject import PIP_QUIET, package_files

TASKS = 16  # per orchard run, and baseline tasks in all (--quick: 8)
PARALLEL = 4
DEPENDENCIES = ("b7dep-a", "b7dep-b", "b7dep-c")

# The agent: records when it started, asks its venv where the project imports from, makes its change.
AGENT = '''import time
started = time.time()
import json, os, pathlib, subprocess, sys
stamps, task, name = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[2] + "." + sys.argv[3]
probe = subprocess.run([".venv/bin/python", "-P", "-c", "import b7app; print(b7app.where())"],
                       capture_output=True, text=True, check=False)
pathlib.Path("out", task + ".txt").write_text(task + "\\n")
found = {"started": started, "cwd": os.getcwd(), "venv_ok": probe.returncode == 0,
         "imports_from": probe.stdout.strip(), "error": probe.stderr.strip()[-300:]}
(stamps / (name + ".tmp")).write_text(json.dumps(found))
(stamps / (name + ".tmp")).rename(stamps / (name + ".json"))
'''


# ---- the generated project ------------------------------------------------------------------------------------
def build_wheels(sources: Path, into: Path) -> list[str]:
    """The dependencies' wheels, built offline from generated packages."""
    return python_project.build_wheels(sources, into, DEPENDENCIES, python=PYTHON)


def make_project(root: Path, sources: Path) -> Path:
    """The repository: the project (which depends on the three wheels), a few modules, `out/` for the agents, and
    the wheels committed under `wheels/`."""
    body = ("import pathlib\n\n" + "".join(f"import {d.replace('-', '_')}\n" for d in DEPENDENCIES) +
            "\n\ndef where():\n    return str(pathlib.Path(__file__).resolve().parent.parent)\n")
    files = {**package_files("b7app", body, DEPENDENCIES), "README.md": "# b7\n", "out/.keep": "",
             ".gitignore": ".venv/\n__pycache__/\n"}
    for i in range(20):
        files[f"b7app/mod{i:02d}.py"] = f"def f{i}():\n    return {i}\n"
    make_repo(root, files)
    build_wheels(sources, root / "wheels")
    git(root, "add", "wheels")
    git(root, "commit", "-q", "-m", "vendored wheels")
    return root


def setup_commands() -> tuple[tuple[str, ...], ...]:
    """The full setup, as the plan gives it and as the baseline runs it: a venv, then the project and its
    dependencies from the committed wheels."""
    return ((PYTHON, "-m", "venv", ".venv"),
            (".venv/bin/python", "-m", "pip", "install", *PIP_QUIET, "--no-build-isolation", "--find-links", "wheels",
             "-e", "."))


def agent_argv(stamps: Path, task: str, attempt: str) -> list[str]:
    return [PYTHON, "-c", AGENT, str(stamps), task, attempt]


def read_stamp(stamps: Path, task: str, attempt: int) -> dict[str, Any]:
    """What the agent of that attempt wrote when it started."""
    found: dict[str, Any] = json.loads((stamps / f"{task}.{attempt}.json").read_text())
    return found


# ---- orchard --------------------------------------------------------------------------------------------------
def plan(prefix: str, tasks: int, stamps: Path) -> Plan:
    """Independent tasks whose command agent is AGENT, with the project's environment."""
    agent = AgentSpec("stamp", "command", options={"command": agent_argv(stamps, "{task_id}", "{attempt}"),
                                                   "writable": [str(stamps)]})
    environment = Environment(setup=setup_commands(), setup_inputs=("pyproject.toml",), keep=(".venv",))
    chosen = [Task(id=f"{prefix}{i:02d}", prompt="record your start and write one file", agent=agent.name)
              for i in range(tasks)]
    return Plan.build(chosen, {agent.name: agent}, parallel=PARALLEL, source="<b7>", environment=environment)


def setup_skipped(repo: Path, task: str, attempt: int) -> bool:
    """Whether the attempt skipped setup, from its log's marker."""
    logs = list((repo / ".orchard" / "runs").glob(f"*/logs/{task}.{attempt}.log"))
    return bool(logs) and "[orchard: setup skipped" in logs[0].read_text(errors="replace")


def orchard_starts(repo: Path, prefix: str, tasks: int, stamps: Path) -> list[dict[str, Any]]:
    """One orchard run of the plan; per task: slot granted (`running`) → agent's first line, and its parts."""
    events = EventLog()
    result = orchard.run(plan(prefix, tasks, stamps), repo=repo, parallel=PARALLEL, on_event=events)
    if result.status != "completed":
        raise RuntimeError(f"orchard run {prefix} ended {result.status}")
    out = []
    for started in events.of("attempt.started"):
        task, attempt = started["task"], started["attempt"]
        stamp = read_stamp(stamps, task, attempt)
        running = last_before(events, started["t"], task=task, status="running")
        queued = last_before(events, running, task=task, status="queued")
        finished = events.of("attempt.finished", task=task, attempt=attempt)
        out.append({"task": task, "attempt": attempt,
                    "outcome": finished[0]["outcome"] if finished else "?",
                    "detail": finished[0]["detail"] if finished else "", "ready_to_agent_s": stamp["started"] - running,
                    "queued_to_agent_s": stamp["started"] - queued,
                    "ready_to_attempt_started_s": started["t"] - running,
                    "attempt_started_to_agent_s": stamp["started"] - started["t"],
                    "setup_skipped": setup_skipped(repo, task, attempt), **own_venv(stamp)})
    return out


def last_before(events: EventLog, t: float, **match: Any) -> float:
    """The time of the last `task.status` event matching `match` at or before `t`."""
    return float(max(e["t"] for e in events.of("task.status", **match) if e["t"] <= t))


def own_venv(stamp: dict[str, Any]) -> dict[str, Any]:
    """What the agent found in its venv: whether the project imported, and from its own worktree or elsewhere."""
    return {"venv_ok": stamp["venv_ok"], "imports_from_own_worktree": stamp["imports_from"] == stamp["cwd"],
            "imports_from": stamp["imports_from"], "venv_error": stamp["error"]}


# ---- the baseline ---------------------------------------------------------------------------------------------
def baseline_task(repo: Path, where: Path, task: str, stamps: Path) -> dict[str, Any]:
    """What a tool without a pool does per task: a fresh worktree, the full setup, then the agent."""
    ready = time.time()
    path = where / task
    git(repo, "worktree", "add", "--quiet", "-b", f"b7/{task}", str(path), "main")
    added = time.time()
    for argv in setup_commands():
        subprocess.run(argv, cwd=path, check=True, capture_output=True)
    set_up = time.time()
    subprocess.run(agent_argv(stamps, task, "1"), cwd=path, check=True, capture_output=True)
    stamp = read_stamp(stamps, task, 1)
    return {"task": task, "attempt": 1, "ready_to_agent_s": stamp["started"] - ready, "worktree_add_s": added - ready,
            "setup_s": set_up - added, "spawn_to_agent_s": stamp["started"] - set_up, **own_venv(stamp)}


def baseline(repo: Path, prefix: str, tasks: int, stamps: Path) -> list[dict[str, Any]]:
    """`tasks` baseline tasks, PARALLEL at a time; their worktrees and branches removed afterwards (untimed)."""
    where = repo.parent / "baseline-worktrees"
    names = [f"{prefix}{i:02d}" for i in range(tasks)]
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        out = list(pool.map(lambda name: baseline_task(repo, where, name, stamps), names))
    for name in names:
        git(repo, "worktree", "remove", "--force", str(where / name))
        git(repo, "branch", "-q", "-D", f"b7/{name}")
    return out


# ---- the benchmark --------------------------------------------------------------------------------------------
def mean(rows: list[dict[str, Any]], key: str, **match: Any) -> float | None:
    """The mean of `key` over the rows matching `match` (None when none does)."""
    values = [r[key] for r in rows if all(r[k] == v for k, v in match.items())]
    return statistics.fmean(values) if values else None


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means, spread and the environment check of one side's starts."""
    starts = [r["ready_to_agent_s"] for r in rows]
    return {"attempts": len(rows), "tasks": len({r["task"] for r in rows}), "mean_s": statistics.fmean(starts),
            "median_s": statistics.median(starts), "min_s": min(starts), "max_s": max(starts),
            "venv_ok": sum(r["venv_ok"] for r in rows),
            "imports_from_own_worktree": sum(r["imports_from_own_worktree"] for r in rows)}


def orchard_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`summary` plus where orchard's start went: setups run or skipped, the engine's part and the spawn."""
    return {**summary(rows), "setup_ran": sum(not r["setup_skipped"] for r in rows),
            "mean_where_setup_ran_s": mean(rows, "ready_to_agent_s", setup_skipped=False),
            "mean_where_setup_skipped_s": mean(rows, "ready_to_agent_s", setup_skipped=True),
            "ready_to_attempt_started_mean_s": mean(rows, "ready_to_attempt_started_s"),
            "attempt_started_to_agent_mean_s": mean(rows, "attempt_started_to_agent_s"),
            "queued_to_agent_mean_s": mean(rows, "queued_to_agent_s"), "per_start": rows}


def baseline_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {**summary(rows), "worktree_add_mean_s": mean(rows, "worktree_add_s"),
            "setup_mean_s": mean(rows, "setup_s"), "spawn_to_agent_mean_s": mean(rows, "spawn_to_agent_s"),
            "per_start": rows}


def run(cfg: Config) -> list[Result]:
    tasks = 8 if cfg.quick else TASKS
    with scratch("b7") as tmp:
        stamps = tmp / "stamps"
        stamps.mkdir()
        cfg.say("  B7: generating the project and building its three wheels …")
        repo = make_project(tmp / "repo", tmp / "sources")
        baseline(repo, "warm", 1, stamps)  # untimed: the interpreter, pip and the wheels in the page cache
        cfg.say(f"  B7: baseline, {tasks // 2} tasks of worktree add + full setup at parallel {PARALLEL} …")
        base = baseline(repo, "before", tasks // 2, stamps)
        cfg.say(f"  B7: orchard's first run on the repository, {tasks} tasks at parallel {PARALLEL} …")
        cold = orchard_starts(repo, "cold", tasks, stamps)
        cfg.say(f"  B7: orchard again, {tasks} tasks on pooled worktrees …")
        steady = orchard_starts(repo, "steady", tasks, stamps)
        cfg.say(f"  B7: baseline again, {tasks - tasks // 2} tasks …")
        base += baseline(repo, "after", tasks - tasks // 2, stamps)
    return rows(cfg, tasks, baseline_summary(base), orchard_summary(cold), orchard_summary(steady))


def rows(cfg: Config, tasks: int, base: dict[str, Any], cold: dict[str, Any], steady: dict[str, Any]) -> list[Result]:
    """The steady-state row (the target) and the cold row (a repository's first run), with what they are made of."""
    details = {"tasks": tasks, "parallel": PARALLEL, "setup": [list(c) for c in setup_commands()],
               "baseline": base, "orchard_steady": steady, "orchard_cold": cold}
    notes = [f"ready = the task's `running` event (slot granted), agent started = the agent's own first timestamp; "
             f"mean over {tasks} tasks; baseline: worktree add + the same setup + the same agent, {base['tasks']} "
             f"tasks at parallel {PARALLEL}, half before orchard and half after",
             f"steady: setup ran in {steady['setup_ran']} of {steady['attempts']} starts; cold (the repository's "
             f"first run): in {cold['setup_ran']} of {cold['attempts']}, {fmt(cold['mean_where_setup_ran_s'], 's')} "
             f"there and {fmt(cold['mean_where_setup_skipped_s'], 's')} where it was skipped",
             f"venvs whose project imports from the agent's own worktree: orchard steady "
             f"{steady['imports_from_own_worktree']}/{steady['attempts']}, cold "
             f"{cold['imports_from_own_worktree']}/{cold['attempts']}, baseline "
             f"{base['imports_from_own_worktree']}/{base['attempts']}"]
    failed = [f"{r['task']}.{r['attempt']} {r['outcome']} ({r['detail'][:80]})" for side in (cold, steady)
              for r in side["per_start"] if r["outcome"] != "success"]
    if failed:
        notes.append(f"attempts that did not succeed (each counted as a start): {'; '.join(failed)}")
    if cfg.quick:
        notes.append(f"--quick: {tasks} tasks per side, not {TASKS}")
    what = f"environment setup: {tasks} tasks at parallel {PARALLEL}, venv + 4 packages; ready → agent started"
    return [Result("B7", f"{what} (vs worktree add + full setup)", measured=steady["mean_s"],
                   baseline=base["mean_s"], ratio=steady["mean_s"] / base["mean_s"], target=Target("<=", 0.15),
                   details=details, notes=notes),
            Result("B7", f"… the repository's first run ({cold['setup_ran']} of {tasks} set up a new worktree)",
                   measured=cold["mean_s"], baseline=base["mean_s"], ratio=cold["mean_s"] / base["mean_s"]),
            venv_row(base, steady)]


def venv_row(base: dict[str, Any], steady: dict[str, Any]) -> Result:
    """Whether the environment the steady-state agents were given works: their venv imports the (editable) project
    from their own worktree, as every baseline agent's does."""
    good, of = steady["imports_from_own_worktree"], steady["attempts"]
    return Result("B7", "… the kept .venv works in the agent's worktree (`python -P -c 'import b7app'` finds it there)",
                  measured=good, baseline=base["imports_from_own_worktree"], unit="",
                  target=Target(">=", of, on="measured", label=f"{of}/{of}"), measured_text=f"{good}/{of}",
                  baseline_text=f"{base['imports_from_own_worktree']}/{base['attempts']}")
