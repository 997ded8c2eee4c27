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


def snapshot_repository(git_dir: Path, *, skip: str = "refs/heads/orchard/") -> dict[str, str]:
    """Every file of a git directory an agent could use against its owner (config, hooks, info, refs, packed refs,
    reflogs, the stash's log) by content hash, minus the refs under `skip` (orchard's published ones) and their
    reflogs, for "the user's repository is unchanged" assertions."""
    files: dict[str, str] = {}
    for top in ("config", "hooks", "info", "refs", "packed-refs", "logs", "HEAD", "commondir", "shallow"):
        base = git_dir / top
        found = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        for path in found:
            name = path.relative_to(git_dir).as_posix()
            if name.startswith(skip) or name.startswith("logs/" + skip):
                continue
            data = path.read_bytes()
            if name == "packed-refs":
                data = b"".join(line for line in data.splitlines(keepends=True) if skip.encode() not in line)
            files[name] = hashlib.sha256(data).hexdigest()
    return files
