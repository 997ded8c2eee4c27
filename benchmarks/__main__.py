"""`python -m benchmarks [--quick] [--only B1,B3] [--out FILE] [--profile] [--cache DIR]`

Runs the benchmarks one after another (never in parallel: the figures are ratios against baselines measured in the
same run, and a 2-core machine has no room for both at once), prints the results table and writes them as JSON
(default `benchmarks/results/latest.json`). Exit status: 0 when every benchmark ran (missed targets included),
1 when one of them failed to run.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.common import (
    DEFAULT_CACHE,
    RESULTS,
    ROOT,
    Config,
    Result,
    choose_scratch,
    fmt,
    fs_type,
    isolate_git,
)

MODULES = {"B1": "b1_scheduler", "B2": "b2_overhead", "B3": "b3_task_start", "B4": "b4_merge_queue",
           "B5": "b5_scale", "B6": "b6_speedup", "B7": "b7_environment", "B8": "b8_gate",
           "B9": "b9_report", "B10": "b10_ray"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[2].strip())
    parser.add_argument("--quick", action="store_true", help="smaller sizes (each row says what it shrank)")
    parser.add_argument("--only", help="comma-separated ids, e.g. B1,B3")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="where to write the JSON results")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="where the generated large repository is kept between runs")
    parser.add_argument("--scratch", type=Path,
                        help="where temporary repositories go (default: /dev/shm if it is a tmpfs, else the system's "
                             "temporary directory)")
    parser.add_argument("--profile", action="store_true",
                        help="also sample stacks, time locks and cProfile the plan loader (figures get inflated)")
    args = parser.parse_args(argv)
    chosen = [s.strip().upper() for s in args.only.split(",")] if args.only else list(MODULES)
    unknown = [c for c in chosen if c not in MODULES]
    if unknown:
        parser.error(f"unknown benchmark id(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    args.chosen = chosen
    return args


def machine() -> dict[str, Any]:
    def out(*cmd: str) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
        return proc.stdout.strip()

    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "git": out("git", "--version"), "load_average_at_start": os.getloadavg(),
            "orchard_commit": out("git", "rev-parse", "HEAD"),
            "orchard_src_modified": bool(out("git", "status", "--porcelain", "--", "src"))}


def table(results: list[Result], title: str) -> Table:
    t = Table(title=title, show_lines=False)
    for name, justify in (("id", "left"), ("what", "left"), ("measured", "right"), ("baseline", "right"),
                          ("ratio", "right"), ("target", "left"), ("result", "left")):
        t.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in results:
        if r.error:
            verdict = "[red]error"
        elif r.passed is None:
            verdict = "—"
        else:
            verdict = "[green]pass" if r.passed else "[red]miss"
        t.add_row(r.id, r.what, r.measured_text or fmt(r.measured, r.unit), r.baseline_text or fmt(r.baseline, r.unit),
                  "—" if r.ratio is None else f"{r.ratio:.3f}", r.target.text() if r.target else "—", verdict)
    return t


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
    scratch_dir = choose_scratch(args.scratch)
    tempfile.tempdir = str(scratch_dir)  # every temporary repository of this process goes there
    home = Path(tempfile.mkdtemp(prefix="orchard-bench-home-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    isolate_git(home)
    cfg = Config(quick=args.quick, cache=args.cache, profile=args.profile,
                 say=lambda text: err.print(text, markup=False))
    started = datetime.datetime.now(datetime.UTC)
    info = machine()
    info.update(scratch=str(scratch_dir), scratch_fs=fs_type(scratch_dir), cache=str(args.cache.resolve()),
                cache_fs=fs_type(args.cache.parent if not args.cache.exists() else args.cache))
    err.print(f"scratch repositories in {scratch_dir} ({info['scratch_fs']}); large repository cache in "
              f"{args.cache} ({info['cache_fs']})", markup=False)
    results: list[Result] = []
    durations: dict[str, float] = {}
    t0 = time.perf_counter()
    for bid in args.chosen:
        err.print(f"[bold]{bid}[/bold] …")
        t = time.perf_counter()
        try:
            rows = importlib.import_module(f"benchmarks.{MODULES[bid]}").run(cfg)
        except Exception as exc:
            traceback.print_exc()
            rows = [Result(bid, f"{MODULES[bid]} did not run", error=f"{type(exc).__name__}: {exc}")]
        durations[bid] = round(time.perf_counter() - t, 2)
        err.print(f"  {bid} took {durations[bid]:.1f} s")
        results.extend(rows)
    total = time.perf_counter() - t0
    mode = "quick" if args.quick else "full"
    out.print(table(results, f"orchard benchmarks ({mode}, {total:.0f} s on {info['cpus']} CPUs)"))
    for r in results:
        for note in r.notes:
            out.print(f"  {r.id}: {note}", markup=False)
        if r.error:
            out.print(f"  {r.id}: error: {r.error}", markup=False)
    info["load_average_at_end"] = os.getloadavg()
    document = {"suite": "orchard benchmarks", "format": 1, "started_at": started.isoformat(timespec="seconds"),
                "mode": mode, "profile": args.profile, "total_s": round(total, 2), "durations_s": durations,
                "machine": info, "results": [r.to_json() for r in results]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    out.print(f"results: {args.out}  (total {total:.1f} s)", markup=False)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
