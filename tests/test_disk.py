"""Disk limits: a run refuses to start below the free-space threshold, stops resumably when the disk fills up;
kept worktrees stay under a size cap."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchard.core.sizes import format_size, parse_size
from tests.conftest import FAKE_AGENT, git, run_orchard
from tests.test_engine_acceptance import plan_text, task


def test_sizes() -> None:
    assert parse_size("500MB") == 500_000_000 and parse_size("2G") == 2_000_000_000
    assert parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size("1024") == 1024
    assert format_size(1_500_000_000) == "1.5 GB"
    with pytest.raises(ValueError, match="expected a size"):
        parse_size("lots")


def test_refuses_to_start_below_the_free_space_threshold(repo: Path, write_plan: Callable[[str], Path]) -> None:
    plan = write_plan(plan_text(task("a", "@write a.txt a")))
    result = run_orchard("run", str(plan), "--min-free-disk", "1PB", cwd=repo)
    assert result.code == 3 and "below the 1000.0 TB a run needs" in result.err and "Traceback" not in result.err
    assert run_orchard("status", cwd=repo).code == 2  # nothing was started
    bad = run_orchard("run", str(plan), "--min-free-disk", "plenty", cwd=repo)
    assert bad.code == 2 and "--min-free-disk" in bad.err


def test_kept_worktrees_are_collected_oldest_first(repo: Path, write_plan: Callable[..., Path]) -> None:
    big = "x" * 600_000
    failing = plan_text(task("keep", f"@write big.txt {big}\n@exit 1"))
    for _ in range(2):  # two failed runs, each keeping a 600 KB worktree for inspection
        assert run_orchard("run", str(write_plan(failing)), cwd=repo).code == 1
    base = repo / ".orchard" / "worktrees"
    old, newer = sorted(base.iterdir(), key=lambda p: (p / "keep").stat().st_mtime)
    assert (old / "keep" / "big.txt").exists() and (newer / "keep" / "big.txt").exists()
    ok = write_plan(plan_text(task("fine", "@write fine.txt f")), "ok.yaml")
    result = run_orchard("run", str(ok), "--max-worktrees-size", "1MB", "--json", cwd=repo)
    assert result.code == 0
    assert not (old / "keep").exists() and (newer / "keep" / "big.txt").exists()  # only what the cap required
    notes = [e["text"] for e in result.ndjson() if e["type"] == "run.note"]
    assert any("removed 1 kept worktree" in n for n in notes)
    assert str(old / "keep") not in git(repo, "worktree", "list")


def test_parked_worktrees_count_towards_the_cap(repo: Path, write_plan: Callable[[str], Path]) -> None:
    (repo / "big.txt").write_text("x" * 800_000)  # every worktree of this repository weighs 800 KB
    git(repo, "add", "big.txt")
    git(repo, "commit", "-qm", "big")
    # both in flight at once, so the run makes two worktrees and parks both
    plan = write_plan(plan_text("".join(task(f"p{i}", "@barrier both 2\n@write p.txt p") for i in range(2)),
                                parallel=2))
    assert run_orchard("run", str(plan), cwd=repo).code == 0
    pool = repo / ".orchard" / "pool"
    assert len(list(pool.iterdir())) == 2  # parked for the next run
    bad = run_orchard("run", str(plan), "--pool-size", "many", cwd=repo)
    assert bad.code == 2 and "--pool-size" in bad.err
    result = run_orchard("run", str(plan), "--max-worktrees-size", "1MB", "--json", cwd=repo)
    assert result.code == 0
    notes = [e["text"] for e in result.ndjson() if e["type"] == "run.note"]
    assert any("removed 1 kept worktree" in n and "pool/" in n for n in notes)  # 1.6 MB parked: one had to go


def test_a_disk_that_fills_up_mid_run_stops_it_with_exit_3_and_the_resume_loses_nothing(tmp_path: Path) -> None:
    """The trial's full disk raised again in the error handler and hung orchard for 10 minutes. Here the disk
    (a 40 MB tmpfs in a mount namespace of bubblewrap's, so no root is needed) fills while three agents work."""
    bwrap = shutil.which("bwrap")
    assert bwrap, "bubblewrap is missing: `make system` installs it (apt-get install bubblewrap)"
    disk, signals = tmp_path / "disk", tmp_path / "signals"
    disk.mkdir()
    signals.mkdir()
    driver = Path(__file__).parent / "agents" / "full_disk_driver.py"
    proc = subprocess.run([bwrap, "--dev-bind", "/", "/", "--size", str(40_000_000), "--tmpfs", str(disk), "--",
                           sys.executable, str(driver), str(disk), str(signals), str(FAKE_AGENT)],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["first_code"] == 3, report
    assert report["first_s"] < 30, report  # seconds, not the trial's ten minutes
    assert "full" in report["first_err"] and "orchard resume" in report["first_err"], report["first_err"]
    assert "Traceback" not in report["first_err"]
    assert report["resume_code"] == 0, report["resume_err"]
    assert report["statuses"] == {"a": "merged", "b": "merged", "c": "merged"}
    assert sorted(report["merges"][:3]) == ["orchard: merge task a", "orchard: merge task b", "orchard: merge task c"]
    # retries: 0, yet every task merged: the attempts the full disk ended were interrupted, not failed
    assert {(t, n, o) for t, n, o in report["attempts"] if n == 1} == {(t, 1, "interrupted") for t in "abc"}
    assert report["starts"] == {"a": 2, "b": 2, "c": 2}
