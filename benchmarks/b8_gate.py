"""B8 — the gated merge train: 64 tasks (`--quick`: 16) whose agent (the fake agent) writes one file, 4 of them
(`--quick`: 1) culprits that also write a marker the project's check rejects, under a merge gate whose check sleeps
1 s (`--quick`: 0.3 s) then fails if a marker is in the checked tree; `integration_batch` 8, `parallel` 8,
`retries` 0, `preflight` off. One real `python -m orchard run` in a child process; its checks are counted from the
journal (`check.started` events in `.orchard/state.db`) and its wall time is taken around the whole child process
(interpreter start, the agents and the tidy-up included). The outcome is verified from `orchard status --json`:
exactly the good tasks merged and the culprits failed, else the rows carry an error.

The baseline, in the same run: checking each result alone in merge order, one check per result, sequentially —
the same check script run once per result in a plain directory holding the tip so far plus that result (a result
that fails is taken out again). Only the checks are timed (no agents, no git); half of them run before orchard and
half after. The check script is committed in the repository (`check.py`), so the gate runs it from its check
worktree.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.common import FAKE_AGENT, PYTHON, Config, Result, Target, make_repo, ratio, scratch

TASKS, CULPRITS, CHECK_S = 64, (5, 21, 38, 54), 1.0
QUICK_TASKS, QUICK_CULPRITS, QUICK_CHECK_S = 16, (5,), 0.3
PARALLEL = 8
BATCH = 8
CHECK_TIMEOUT_S = 60  # `integration_timeout`: one check
RUN_TIMEOUT_S = 900  # the whole `orchard run` child process (`--quick`: a third)

CHECK = '''import pathlib, sys, time
time.sleep({sleep_s!r})
bad = sorted(p.name for p in pathlib.Path(".").glob("bad-*.txt"))
print("rejected: " + ", ".join(bad) if bad else "all good")
sys.exit(1 if bad else 0)
'''


def task_id(i: int) -> str:
    return f"t{i:02d}"


def result_files(i: int, culprits: tuple[int, ...]) -> dict[str, str]:
    """What task i's agent writes: its own file, and a culprit's marker."""
    files = {f"out/{task_id(i)}.txt": f"{i}\n"}
    if i in culprits:
        files[f"bad-{task_id(i)}.txt"] = "oops\n"
    return files


def plan_yaml(tasks: int, culprits: tuple[int, ...]) -> str:
    """The plan: a command agent running the scripted fake agent, the gate running `check.py`."""
    lines = [f"parallel: {PARALLEL}", f'integration_verify: ["{PYTHON}", "check.py"]', f"integration_batch: {BATCH}",
             f"integration_timeout: {CHECK_TIMEOUT_S}s", "preflight: off", "defaults: {agent: fake, retries: 0}",
             "agents:", f'  fake: {{type: command, command: ["{PYTHON}", "{FAKE_AGENT}", "{{prompt_file}}"]}}',
             "tasks:"]
    for i in range(tasks):
        lines += [f"  - id: {task_id(i)}", "    prompt: |"]
        lines += [f"      @write {path} {text.strip()}" for path, text in result_files(i, culprits).items()]
    return "\n".join(lines) + "\n"


def run_check(where: Path, timeout: float) -> tuple[bool, float]:
    """One run of the check script in `where`: whether it passed, and its wall time."""
    t = time.perf_counter()
    proc = subprocess.run([PYTHON, "check.py"], cwd=where, capture_output=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)
    return proc.returncode == 0, time.perf_counter() - t


def baseline(where: Path, order: range, culprits: tuple[int, ...], timeout: float) -> list[dict[str, Any]]:
    """Each result in `order` checked alone on the tip so far (`where`), one after another; a failing one is taken
    out again."""
    out = []
    for i in order:
        files = result_files(i, culprits)
        for name, text in files.items():
            (where / name).write_text(text)
        passed, took = run_check(where, timeout)
        if not passed:
            for name in files:
                (where / name).unlink()
        out.append({"task": task_id(i), "passed": passed, "wall_s": took})
    return out


def journal(repo: Path) -> list[dict[str, Any]]:
    """Every event of the repository's journal: its type, timestamp, task and data."""
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        rows = db.execute("SELECT type, ts, task_id, data FROM events ORDER BY id").fetchall()
    return [{"type": kind, "t": ts, "task": task, **json.loads(data)} for kind, ts, task, data in rows]


def orchard_run(repo: Path, plan: Path, log: Path, timeout: float) -> dict[str, Any]:
    """One `orchard run` in a child process: its wall time, exit code and `orchard status --json`."""
    with log.open("wb") as err, log.with_suffix(".ndjson").open("wb") as out:
        t = time.perf_counter()
        proc = subprocess.run([PYTHON, "-m", "orchard", "run", str(plan), "--json"], cwd=repo, stdout=out, stderr=err,
                              stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        wall = time.perf_counter() - t
    status = subprocess.run([PYTHON, "-m", "orchard", "status", "--json"], cwd=repo, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=60, check=False)
    if status.returncode != 0:
        raise RuntimeError(f"orchard status exited {status.returncode}: {status.stderr[-2000:]}; run's stderr: "
                           f"{log.read_text(errors='replace')[-2000:]}")
    return {"wall_s": wall, "code": proc.returncode, "status": json.loads(status.stdout),
            "stderr_tail": log.read_text(errors="replace")[-2000:]}


def gate_figures(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What the journal says of the gate: the checks, their sizes and verdicts, and when they ran."""
    started = [e for e in events if e["type"] == "check.started"]
    finished = [e for e in events if e["type"] == "check.finished"]
    attempts = [e["t"] for e in events if e["type"] == "attempt.finished"]
    run_start = min(e["t"] for e in events if e["type"] == "run.started")
    durations = [float(e["duration_s"]) for e in finished]
    return {
        "checks": len(started), "checks_finished": len(finished),
        "checks_passed": sum(bool(e["passed"]) for e in finished),
        "checks_failed": sum(not e["passed"] for e in finished),
        "culprits_inferred": sum(len(e["failed"]) for e in finished if e["inferred"]),
        "culprits_blamed_by_own_check": sum(len(e["failed"]) for e in finished if not e["inferred"]),
        "batch_sizes": [len(e["tasks"]) for e in started],
        "check_verdicts": [{"tasks": len(e["tasks"]), "passed": e["passed"], "merged": len(e["merged"]),
                            "failed": list(e["failed"]), "s": round(float(e["duration_s"]), 3)} for e in finished],
        "check_mean_s": statistics.fmean(durations) if durations else None,
        "check_total_s": sum(durations),
        "run_start_to_first_check_s": started[0]["t"] - run_start if started else None,
        "run_start_to_last_attempt_s": max(attempts) - run_start if attempts else None,
        "last_attempt_to_last_check_s": finished[-1]["t"] - max(attempts) if finished and attempts else None,
        "attempts": len(attempts),
    }


def outcome_problem(status: dict[str, Any], tasks: int, culprits: tuple[int, ...]) -> str | None:
    """What is wrong with the run's outcome (None: the good tasks merged, the culprits failed, nothing else)."""
    seen = {t["id"]: t["status"] for t in status["tasks"]}
    wanted = {task_id(i): "failed" if i in culprits else "merged" for i in range(tasks)}
    wrong = {t: f"{seen.get(t, 'missing')} (wanted {want})" for t, want in wanted.items() if seen.get(t) != want}
    wrong.update({t: f"{s} (not in the plan)" for t, s in seen.items() if t not in wanted})
    if not wrong:
        return None
    return "unexpected outcome: " + "; ".join(f"{t} {s}" for t, s in sorted(wrong.items()))


def run(cfg: Config) -> list[Result]:
    tasks, culprits, check_s = (QUICK_TASKS, QUICK_CULPRITS, QUICK_CHECK_S) if cfg.quick else (TASKS, CULPRITS, CHECK_S)
    run_timeout = RUN_TIMEOUT_S / 3 if cfg.quick else RUN_TIMEOUT_S
    check_timeout = check_s + 30
    script = CHECK.format(sleep_s=check_s)
    with scratch("b8") as tmp:
        repo = make_repo(tmp / "repo", {"README.md": "# b8\n", "out/.keep": "", "check.py": script})
        plan = tmp / "plan.yaml"
        plan.write_text(plan_yaml(tasks, culprits))
        tree = tmp / "baseline"
        (tree / "out").mkdir(parents=True)
        (tree / "check.py").write_text(script)
        (tree / "README.md").write_text("# b8\n")
        run_check(tree, check_timeout)  # untimed: the interpreter in the page cache
        half = tasks // 2
        cfg.say(f"  B8: baseline, the first {half} of {tasks} results checked alone ({check_s:g} s checks) …")
        base = baseline(tree, range(half), culprits, check_timeout)
        cfg.say(f"  B8: orchard run of {tasks} tasks ({len(culprits)} culprits) through the gate, batch {BATCH}, "
                f"parallel {PARALLEL} …")
        ran = orchard_run(repo, plan, tmp / "run.stderr", run_timeout)
        gate = gate_figures(journal(repo))
        cfg.say(f"  B8: baseline, the other {tasks - half} results …")
        base += baseline(tree, range(half, tasks), culprits, check_timeout)
    return rows(cfg, tasks, culprits, check_s, ran, gate, base)


def rows(cfg: Config, tasks: int, culprits: tuple[int, ...], check_s: float, ran: dict[str, Any],
         gate: dict[str, Any], base: list[dict[str, Any]]) -> list[Result]:
    """The checks row (the target) and the wall-time row (report only)."""
    base_wall = sum(b["wall_s"] for b in base)
    base_failed = [b["task"] for b in base if not b["passed"]]
    problem = outcome_problem(ran["status"], tasks, culprits)
    if base_failed != [task_id(i) for i in culprits]:
        problem = f"{problem + '; ' if problem else ''}the baseline's checks failed {base_failed}, not the culprits"
    if problem is None and gate["checks"] != gate["checks_finished"]:
        problem = f"{gate['checks']} checks started but {gate['checks_finished']} finished"
    if problem:
        problem += f" (orchard run exited {ran['code']}; stderr tail: {ran['stderr_tail'][-600:]})"
    details = {"tasks": tasks, "culprits": [task_id(i) for i in culprits], "check_sleep_s": check_s,
               "batch": BATCH, "parallel": PARALLEL, "orchard_exit_code": ran["code"], "orchard_wall_s": ran["wall_s"],
               "gate": gate, "run_checks": ran["status"].get("run", {}).get("checks"),
               "baseline": {"checks": len(base), "wall_s": base_wall,
                            "check_mean_s": statistics.fmean(b["wall_s"] for b in base), "failed": base_failed}}
    shape = f"{tasks} tasks, {len(culprits)} culprit{'s' if len(culprits) != 1 else ''}, {check_s:g} s check"
    notes = [f"orchard: one `orchard run` (batch {BATCH}, parallel {PARALLEL}), checks = `check.started` events "
             f"({gate['checks_passed']} passed, {gate['checks_failed']} failed, {gate['culprits_inferred']} culprit(s) "
             f"blamed by inference); batch sizes {gate['batch_sizes']}",
             f"wall: orchard = the whole child process (agents, checks, set-up and tidy-up); baseline = the "
             f"{len(base)} sequential checks only (no agents, no git), half before orchard and half after",
             f"orchard: agents done {fmt_s(gate['run_start_to_last_attempt_s'])} after run start, first check at "
             f"{fmt_s(gate['run_start_to_first_check_s'])}, last check {fmt_s(gate['last_attempt_to_last_check_s'])} "
             f"after the last agent; mean check {fmt_s(gate['check_mean_s'])} in orchard vs "
             f"{fmt_s(details['baseline']['check_mean_s'])} alone"]
    if cfg.quick:
        notes.append(f"--quick: {shape}, not {TASKS} tasks, {len(CULPRITS)} culprits, {CHECK_S:g} s check")
    checks = Result("B8", f"checks: orchard's gated train vs each result checked alone ({shape})",
                    measured=gate["checks"], baseline=len(base), ratio=ratio(gate["checks"], len(base)), unit="",
                    target=Target("<=", 0.35), details=details, notes=notes, error=problem)
    wall = Result("B8", "… wall time: the whole orchard run vs the sequential checks alone (checks only)",
                  measured=ran["wall_s"], baseline=base_wall, ratio=ratio(ran["wall_s"], base_wall), error=problem)
    return [checks, wall]


def fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"
