"""B5 — scale.

Plan: a generated 10,000-task YAML plan (100 layers of 100 tasks, 1–3 dependencies on the layer before, estimates,
declared files — some of them globs). Timed: `python -m orchard plan FILE` as a child process (wall time, interpreter
start included; median of 3, `--quick` 1), and in-process `orchard.plan.load` + the preview `orchard plan` prints.

Memory: 2,000 instant tasks (`--quick`: 200) at `parallel` 16 through `python -m orchard run --json` in a child
process; its resident set is sampled with psutil every 20 ms (the orchestrator process only, not git or agents).
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PYTHON,
    Config,
    Every,
    PeakRss,
    Result,
    Target,
    copy_agent_command,
    median,
    merge_backlog,
    read_ndjson_events,
    scratch,
    small_repo,
)
from benchmarks.profiling import cprofile_top

PLAN_TASKS = 10_000
RSS_PARALLEL = 16


def big_plan_yaml(tasks: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    width = 100
    lines = ["parallel: 8", "agents:", '  default: {type: command, command: ["true"]}', "tasks:"]
    for i in range(tasks):
        layer = i // width
        lines.append(f"  - id: t{i:05d}")
        lines.append(f"    prompt: implement part {i} of the feature")
        if layer:
            deps = sorted({f"t{(layer - 1) * width + rng.randrange(width):05d}" for _ in range(rng.randint(1, 3))})
            lines.append(f"    depends_on: [{', '.join(deps)}]")
        lines.append(f"    estimate: {rng.randint(1, 60)}m")
        pattern = f"src/area{i % 400}/*.py" if rng.random() < 0.05 else f"src/area{i % 400}/part{i}.py"
        lines.append(f"    files: [{pattern}]")
        if rng.random() < 0.1:
            lines.append(f"    priority: {rng.randint(1, 5)}")
    return "\n".join(lines) + "\n"


def instant_plan_yaml(tasks: int, source: Path) -> str:
    command = ", ".join(f'"{part}"' for part in copy_agent_command(source))
    lines = [f"parallel: {RSS_PARALLEL}", "agents:", f"  cp: {{type: command, command: [{command}]}}", "tasks:"]
    lines += [f"  - {{id: t{i:05d}, prompt: write one file}}" for i in range(tasks)]
    return "\n".join(lines) + "\n"


def time_plan_cli(repo: Path, plan: Path | None, reps: int, *extra: str) -> list[float]:
    """Wall time of `python -m orchard plan PLAN [extra]` (or of `python -m orchard --version` without a plan)."""
    times = []
    argv = [PYTHON, "-m", "orchard", "plan", str(plan), *extra] if plan else [PYTHON, "-m", "orchard", "--version"]
    for _ in range(reps):
        t = time.perf_counter()
        proc = subprocess.run(argv, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise RuntimeError(f"orchard plan failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return times


def plan_in_process(repo: Path, plan: Path, profile: bool) -> dict[str, Any]:
    from orchard import plan as plan_loader
    from orchard.cli.plan_cmd import preview

    t = time.perf_counter()
    loaded = plan_loader.load(plan, repo)
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    preview(loaded, loaded.parallel)
    t_preview = time.perf_counter() - t
    out: dict[str, Any] = {"load_s": t_load, "preview_s": t_preview}
    if profile:
        _, out["profile_load"] = cprofile_top(lambda: plan_loader.load(plan, repo))
        _, out["profile_preview"] = cprofile_top(lambda: preview(loaded, loaded.parallel))
    return out


def live_worktrees(repo: Path) -> float:
    """Task worktrees that exist right now (orchard removes one once its task merged)."""
    runs = repo / ".orchard" / "worktrees"
    return float(sum(1 for run in runs.iterdir() for _ in run.iterdir())) if runs.is_dir() else 0.0


def peak_rss_of_run(repo: Path, plan: Path, log: Path, tasks: int) -> dict[str, Any]:
    ndjson = log.with_suffix(".ndjson")
    with log.open("wb") as err, ndjson.open("wb") as out:
        t = time.perf_counter()
        proc = subprocess.Popen([PYTHON, "-m", "orchard", "run", str(plan), "--json"], cwd=repo,
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        with PeakRss(proc.pid) as rss, Every(lambda: live_worktrees(repo), 2.0) as worktrees:
            code = proc.wait()
        wall = time.perf_counter() - t
    if code != 0:  # 0 means completed: every task merged
        raise RuntimeError(f"orchard run exited {code}: {log.read_text(errors='replace')[-2000:]}")
    every = max(1, len(worktrees.timeline) // 15)
    return {"peak_rss_mb": rss.peak / 2**20, "first_sample_mb": rss.first / 2**20, "samples": rss.samples,
            "wall_s": wall, "wall_per_task_ms": 1000 * wall / tasks,
            "rss_mb_by_second": rss.timeline[:: max(1, len(rss.timeline) // 15)],
            "live_worktrees_by_second": worktrees.timeline[::every],
            "merge_queue": merge_backlog(read_ndjson_events(ndjson))}


def run(cfg: Config) -> list[Result]:
    reps = 1 if cfg.quick else 3
    rss_tasks = 200 if cfg.quick else 2_000
    with scratch("b5") as tmp:
        repo = small_repo(tmp / "repo")
        big = repo / "big-plan.yaml"  # untracked, like a plan someone is drafting
        big.write_text(big_plan_yaml(PLAN_TASKS))
        plan_bytes = big.stat().st_size
        cfg.say(f"  B5: orchard plan on {PLAN_TASKS:,} tasks ({reps}×) …")
        cli = time_plan_cli(repo, big, reps)
        breakdown = {"cli_json_wall_s": time_plan_cli(repo, big, 1, "--json")[0],
                     "cli_startup_s": median(time_plan_cli(repo, None, 3))}
        inproc = plan_in_process(repo, big, cfg.profile)
        source = tmp / "payload.txt"
        source.write_text("one file\n")
        small = tmp / "instant-plan.yaml"
        small.write_text(instant_plan_yaml(rss_tasks, source))
        cfg.say(f"  B5: orchard run of {rss_tasks:,} instant tasks at parallel {RSS_PARALLEL}, sampling RSS …")
        rss = peak_rss_of_run(repo, small, tmp / "run.stderr", rss_tasks)
    plan_notes = [f"CLI wall: median of {reps}, interpreter start and imports included; in-process load "
                  f"{inproc['load_s']:.2f} s + preview {inproc['preview_s']:.2f} s; `--json` (no rendering) "
                  f"{breakdown['cli_json_wall_s']:.2f} s; `orchard --version` {breakdown['cli_startup_s']:.2f} s"]
    rss_notes = ["psutil samples of the orchestrator process only (every 20 ms); not git, not agents"]
    if cfg.quick:
        rss_notes.append(f"--quick: {rss_tasks} tasks, not 2,000")
    return [
        Result("B5", f"scale: validate + `orchard plan` of {PLAN_TASKS:,} tasks (CLI wall)", measured=median(cli),
               target=Target("<=", 2.0, on="measured_s"),
               details={"cli_wall_s": cli, **breakdown, **inproc, "plan_bytes": plan_bytes}, notes=plan_notes),
        Result("B5", f"scale: orchestrator peak RSS, {rss_tasks:,} instant tasks at parallel {RSS_PARALLEL}",
               measured=rss["peak_rss_mb"], unit="MB", target=Target("<=", 150.0, on="measured_mb"),
               details={**rss, "tasks": rss_tasks}, notes=rss_notes),
    ]
