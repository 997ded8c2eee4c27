"""The large repository of B3 and B4, generated once into the cache and reused across runs.

50,000 files of code-like text, about 200 MB checked out (`--quick`: 5,000 files, about 20 MB), laid out as
`src/pkgNN/modNN/fileNN.txt` (not `.py`: no tool should mistake them for this project's code), written in one
`git fast-import` stream (no file is created on disk until the one checkout). The same stream adds B4's task
commits: `refs/bench/b4/tNNN`, each changing one different file on top of `main`. Generation time is never part of
a measurement; `reset` puts the repository back to a clean `main` before and after a benchmark uses it.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import git

B4_BRANCHES = 200
FILES_PER_DIR = 50
DIRS_PER_PACKAGE = 20
IDENT = b"Bench <bench@example.invalid> 1700000000 +0000"


@dataclass(frozen=True)
class LargeRepo:
    """A generated repository: its checkout, base commit, size and the B4 task commits."""

    root: Path
    base: str
    files: int
    bytes: int
    b4_commits: tuple[str, ...]


def file_path(i: int) -> str:
    package, module = i // (FILES_PER_DIR * DIRS_PER_PACKAGE), (i // FILES_PER_DIR) % DIRS_PER_PACKAGE
    return f"src/pkg{package:02d}/mod{module:02d}/file{i % FILES_PER_DIR:02d}.txt"


def ensure(cache: Path, files: int, total_bytes: int, say: Callable[[str], None] = print) -> LargeRepo:
    """The cached repository for these parameters, generated first if it is missing or incomplete."""
    root = cache / f"large-{files}"
    marker = root / ".git" / "bench-cache.json"
    wanted = {"files": files, "target_bytes": total_bytes, "b4_branches": B4_BRANCHES, "version": 2}
    if marker.is_file():
        info = json.loads(marker.read_text())
        if all(info.get(k) == v for k, v in wanted.items()):
            repo = LargeRepo(root, info["base"], files, info["bytes"], tuple(info["b4_commits"]))
            reset(repo)
            return repo
    shutil.rmtree(root, ignore_errors=True)
    say(f"  generating the large repository once ({files:,} files, ~{total_bytes / 1e6:.0f} MB) into {root} …")
    written = _generate(root, files, total_bytes)
    base = git(root, "rev-parse", "refs/heads/main").strip()
    commits = tuple(git(root, "rev-parse", *[f"refs/bench/b4/t{i:03d}" for i in range(B4_BRANCHES)]).split())
    marker.write_text(json.dumps({**wanted, "base": base, "bytes": written, "b4_commits": commits}))
    return LargeRepo(root, base, files, written, commits)


def _generate(root: Path, files: int, total_bytes: int) -> int:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "gc.auto", "0")
    rng = random.Random(20240501)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz_", k=rng.randint(2, 12))) for _ in range(4000)]
    pool = [" " * (4 * rng.randint(0, 3)) + " ".join(rng.choices(words, k=rng.randint(2, 10))) + "\n"
            for _ in range(20000)]
    line_len = sum(map(len, pool)) / len(pool)
    sigma = 0.8
    mean_lines = total_bytes / files / line_len
    mu = math.log(mean_lines) - sigma * sigma / 2  # a log-normal with that mean
    changed = {i * files // B4_BRANCHES: n for n, i in enumerate(range(B4_BRANCHES))}
    proc = subprocess.Popen(["git", "-C", str(root), "-c", "pack.compression=1", "fast-import", "--quiet"],
                            stdin=subprocess.PIPE)
    assert proc.stdin is not None
    out = proc.stdin
    out.write(b"commit refs/heads/main\nmark :1\ncommitter %s\ndata 10\ngenerated\n" % IDENT)
    written = 0
    originals: dict[int, bytes] = {}
    for i in range(files):
        path = file_path(i)
        count = max(1, int(rng.lognormvariate(mu, sigma)))
        data = (f"# {path}\n" + "".join(rng.choices(pool, k=count))).encode()
        written += len(data)
        if i in changed:
            originals[i] = data
        out.write(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
    out.write(b"\n")
    for i, n in sorted(changed.items(), key=lambda item: item[1]):
        data = originals[i] + f"# changed by task t{n:03d}\n".encode()
        out.write(b"commit refs/bench/b4/t%03d\ncommitter %s\ndata 12\ntask change\nfrom :1\n" % (n, IDENT))
        out.write(b"M 100644 inline %s\ndata %d\n%s\n\n" % (file_path(i).encode(), len(data), data))
    out.close()
    if proc.wait() != 0:
        raise RuntimeError("git fast-import failed")
    git(root, "reset", "-q", "--hard", "refs/heads/main")
    return written


def reset(repo: LargeRepo) -> None:
    """Back to a clean `main`: no orchard state, no benchmark branches or worktrees, no loose leftovers."""
    root = repo.root
    shutil.rmtree(root / ".orchard", ignore_errors=True)
    for extra in (baseline_worktrees(repo),):
        shutil.rmtree(extra, ignore_errors=True)
    git(root, "worktree", "prune")
    refs = git(root, "for-each-ref", "--format=%(refname)", "refs/heads/orchard/", "refs/heads/bench/").split()
    if refs:
        git(root, "update-ref", "--stdin", input="".join(f"delete {r}\n" for r in refs).encode())
    if git(root, "symbolic-ref", "-q", "HEAD").strip() != "refs/heads/main":
        git(root, "checkout", "-q", "-f", "main")
    if git(root, "status", "--porcelain"):
        git(root, "reset", "-q", "--hard", "main")
        git(root, "clean", "-q", "-fd")
    loose = int(git(root, "count-objects").split()[0])
    if loose > 2000:
        git(root, "reflog", "expire", "--expire=now", "--all")
        git(root, "prune", "--expire=now")


def baseline_worktrees(repo: LargeRepo) -> Path:
    """Where baselines put their own worktrees: next to the repository, on the same file system."""
    return repo.root.parent / f"{repo.root.name}-baseline-worktrees"
