"""The bundled demo: a small sample repository and a plan whose scripted agents build a tiny package.

It shows parallel worktrees, dependencies, a verify failure fed back to the agent and fixed on retry, and the
merge queue, in about fifteen seconds, offline.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from orchard.demo.plan_text import DEMO_PLAN

AGENT = Path(__file__).with_name("agent.py")


def make_sample_repo(root: Path) -> tuple[Path, Path]:
    """Create `root/sample` (a git repository with one commit) and `root/plan.yaml`; return both paths."""
    repo = root / "sample"
    (repo / "shop").mkdir(parents=True, exist_ok=True)
    (repo / "shop" / "__init__.py").write_text('"""A tiny shop, built by agents."""\n', encoding="utf-8")
    (repo / "README.md").write_text("# sample shop\n\nBuilt by orchard's demo agents.\n", encoding="utf-8")
    (repo / ".gitignore").write_text("__pycache__/\n", encoding="utf-8")
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=orchard demo", "-c", "user.email=demo@orchard.invalid", "commit", "-q", "-m",
                  "initial commit"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True)
    plan = root / "plan.yaml"
    plan.write_text(DEMO_PLAN.replace("{PYTHON}", sys.executable).replace("{AGENT}", str(AGENT)), encoding="utf-8")
    return repo, plan
