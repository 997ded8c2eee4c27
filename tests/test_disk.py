"""Disk limits: a run refuses to start below the free-space threshold; kept worktrees stay under a size cap."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchard.core.sizes import format_size, parse_size
from tests.conftest import git, run_orchard
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
