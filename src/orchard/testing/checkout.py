"""What orchard promises never to touch in a user's checkout, as a value to compare before and after a run."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def snapshot_checkout(repo_root: Path) -> dict[str, str | None]:
    """HEAD (symbolic and resolved), the index file's bytes, the full status (untracked and ignored files too) and
    the stash of the checkout at `repo_root`, for "untouched" assertions in tests and benchmarks."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(repo_root), *args], capture_output=True, text=True, check=False)

    index = Path(run("rev-parse", "--path-format=absolute", "--git-path", "index").stdout.strip())
    sym, head = run("symbolic-ref", "-q", "HEAD"), run("rev-parse", "--verify", "--quiet", "HEAD")
    return {
        "head_ref": sym.stdout.strip() if sym.returncode == 0 else None,
        "head_sha": head.stdout.strip() if head.returncode == 0 else None,
        "index_sha256": hashlib.sha256(index.read_bytes()).hexdigest() if index.is_file() else None,
        "status": run("--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all",
                      "--ignored").stdout,
        "stash": run("stash", "list", "--format=%H").stdout,
    }
