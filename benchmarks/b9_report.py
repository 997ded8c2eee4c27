"""B9: the HTML report of a large run opens quickly in a browser: a synthetic run of 500 tasks (two attempts each,
every phase, a dependency chain every ten tasks), rendered by `ui.html_report` and opened from file:// in the
browser tests' headless Chromium; the time to the page's load event, against a 50-task report opened in the same
session. Target: under 3 s for 500 tasks."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Config, Result, Target
from orchard.core.timeline import PHASES
from orchard.ui.html_report import report_html

LOAD_JS = "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;"


def synthetic_report(tasks: int) -> dict[str, Any]:
    """A report document of `tasks` tasks as `ui.run_report` makes them: two attempts, each with every phase."""
    t0 = 1_000_000.0
    rows, steps = [], []
    for i in range(tasks):
        start = t0 + (i % 50) * 30.0
        attempts = []
        for n in (1, 2):
            phases, at = [], start + (n - 1) * 200.0
            for name in PHASES:
                phases.append({"name": name, "start": at, "end": at + 20.0})
                at += 20.0
            attempts.append({"number": n, "agent": "a", "outcome": "verify_failed" if n == 1 else "success",
                             "detail": "verify failed (exit 1)" if n == 1 else "", "start": start, "end": at,
                             "cost_usd": 0.01, "phases": phases})
        rows.append({"id": f"task-{i:04d}", "name": None, "status": "merged", "agent": "a",
                     "depends_on": [f"task-{i - 1:04d}"] if i % 10 else [], "error": None, "cost_usd": 0.02,
                     "tokens_in": 1000, "tokens_out": 200, "phases_s": dict.fromkeys(PHASES, 40.0),
                     "files": [{"path": f"src/m{i}.py", "added": 10, "removed": 2}], "summary": "did it",
                     "log_tail": "line\n" * 40, "commands": [f"orchard logs task-{i:04d}"], "attempts": attempts})
        steps.append({"at": start, "running": 8, "by_agent": {"a": 8}})
    summary = {"merged": tasks, "tasks": tasks, "failed": 0, "blocked": 0, "attempts": 2 * tasks, "wall_s": 3000.0,
               "work_s": 40000.0, "speedup": 13.3, "utilization": 0.8, "parallel": 16, "cost_usd": 10.0,
               "tokens_in": 10**6, "tokens_out": 10**5, "sessions": 1,
               "agents": {"a": {"attempts": 2 * tasks, "work_s": 40000.0, "tokens_in": 10**6, "tokens_out": 10**5,
                                "cost_usd": 10.0}}}
    return {"run": {"id": "bench", "status": "completed", "base": "main", "integration_branch": "i",
                    "started_at": None, "finished_at": None, "t0": t0, "parallel": 16, "estimated_makespan_s": 2800.0},
            "summary": summary, "tasks": rows, "concurrency": sorted(steps, key=lambda s: s["at"]),
            "max_parallel": {"a": None}, "critical_path": [r["id"] for r in rows[:10]]}


def open_time(driver: Any, page: Path, repeats: int) -> float:
    """The median time from navigation to the load event, over `repeats` loads."""
    times = []
    for _ in range(repeats):
        driver.get("about:blank")
        driver.get(page.as_uri())
        times.append(float(driver.execute_script(LOAD_JS)) / 1000.0)
    return sorted(times)[len(times) // 2]


def run(cfg: Config) -> list[Result]:
    from tests.browser import start_chromium, stop_chromium

    with tempfile.TemporaryDirectory(prefix="orchard-b9-") as scratch:
        work = Path(scratch)
        pages = {}
        for tasks in (50, 500):
            began = time.perf_counter()
            text = report_html(synthetic_report(tasks))
            pages[tasks] = (work / f"r{tasks}.html", time.perf_counter() - began, len(text))
            pages[tasks][0].write_text(text, encoding="utf-8")
        driver = start_chromium(work / "chromium")
        try:
            repeats = 3 if cfg.quick else 5
            small, large = (open_time(driver, pages[n][0], repeats) for n in (50, 500))
        finally:
            stop_chromium(driver)
    return [Result("B9", "HTML report of 500 tasks opens in Chromium (vs 50 tasks)", measured=large, baseline=small,
                   ratio=large / small if small else None, target=Target("<=", 3.0, on="measured", label="≤ 3 s"),
                   details={"render_500_s": round(pages[500][1], 3), "bytes_500": pages[500][2],
                            "render_50_s": round(pages[50][1], 3)})]
