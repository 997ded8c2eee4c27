"""The bundled demo: a small sample repository and a plan whose scripted agents build a tiny package.

It shows parallel worktrees, dependencies, a verify failure fed back to the agent and fixed on retry, and the
merge queue, in about fifteen seconds, offline.
"""

from __future__ import annotations

import sys
from pathlib import Path

from orchard.demo.plan_text import DEMO_PLAN
from orchard.vcs import commit_all, init_repository

AGENT = Path(__file__).with_name("agent.py")


def make_sample_repo(root: Path) -> tuple[Path, Path]:
    """Create `root/sample` (a git repository with one commit) and `root/plan.yaml`; return both paths."""
    repo = root / "sample"
    init_repository(repo, "main")
    (repo / "shop").mkdir(parents=True, exist_ok=True)
    (repo / "shop" / "__init__.py").write_text('"""A tiny shop, built by agents."""\n', encoding="utf-8")
    (repo / "README.md").write_text("# sample shop\n\nBuilt by orchard's demo agents.\n", encoding="utf-8")
    (repo / ".gitignore").write_text("__pycache__/\n", encoding="utf-8")
    commit_all(repo, "initial commit")
    plan = root / "plan.yaml"
    plan.write_text(DEMO_PLAN.replace("{PYTHON}", sys.executable).replace("{AGENT}", str(AGENT)), encoding="utf-8")
    return repo, plan
