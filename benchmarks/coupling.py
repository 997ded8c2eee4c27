"""`python -m benchmarks.coupling REPO [--commits 30] [--windows 1] [--end REV] [--history 200] [--mention K]`

How well `orchard analyze` predicts which tasks touch the same files, measured on a real project's history: each of
`--commits` consecutive commits (non-merge, topological order, ending at `--end`) becomes a task whose prompt is its
commit message, analysed against the parent of the first one, with the `--history` commits before it as history.
Ground truth: two commits are coupled when they change a common file. Precision: the share of predicted pairs (every
risk) that are coupled; recall: the share of coupled pairs predicted; `top`: the precision of each window's
TOP_K highest-ranked risks. `--windows K` repeats on K windows of commits further back and pools the counts.
`--mention K` appends to each prompt K of the files its commit changed (chosen with a fixed seed among those in the
base tree): it measures the coupling rules given prompts that name some of their files, as prompts written for
agents do. `--json` prints the figures as JSON. Not part of `python -m benchmarks`: it measures a heuristic's
quality, not orchard's speed (docs/analysis.md has the figures).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import git
from orchard.analysis import DEFAULT_HISTORY, Analysis, Kind, analyze
from orchard.core.model import AgentSpec, Plan, Task

Pair = tuple[str, str]
TOP_K = 5


@dataclass(frozen=True)
class Commit:
    sha: str
    message: str
    files: frozenset[str]


@dataclass
class Counts:
    """Predicted and true pairs, and inferred against changed files, summed over windows."""

    predicted: int = 0
    true: int = 0
    hits: int = 0
    pairs: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind: [predicted, hits]
    files_inferred: int = 0
    files_changed: int = 0
    files_hit: int = 0
    top: int = 0  # risks among each window's TOP_K highest-ranked
    top_hits: int = 0
    seconds: float = 0.0

    def add(self, other: Counts) -> None:
        for name in ("predicted", "true", "hits", "pairs", "files_inferred", "files_changed", "files_hit", "top",
                     "top_hits"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds += other.seconds
        for kind, (p, h) in other.by_kind.items():
            mine = self.by_kind.setdefault(kind, [0, 0])
            mine[0] += p
            mine[1] += h

    def summary(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs, "coupled": self.true, "predicted": self.predicted, "hits": self.hits,
            "precision": _share(self.hits, self.predicted), "recall": _share(self.hits, self.true),
            "base_rate": _share(self.true, self.pairs), "top": _share(self.top_hits, self.top),
            "by_kind": {k: {"predicted": p, "hits": h, "precision": _share(h, p)}
                        for k, (p, h) in sorted(self.by_kind.items())},
            "files": {"inferred": self.files_inferred, "changed": self.files_changed, "hits": self.files_hit,
                      "precision": _share(self.files_hit, self.files_inferred),
                      "recall": _share(self.files_hit, self.files_changed)},
            "analysis_s": round(self.seconds, 3),
        }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def commits(repo: Path, end: str, count: int, skip: int) -> list[Commit]:
    """`count` non-merge commits ending `skip` commits before `end` in topological order, oldest first."""
    shas = git(repo, "rev-list", "--no-merges", "--topo-order", f"--skip={skip}", f"--max-count={count}", end,
               "--").split()
    found = []
    for sha in reversed(shas):
        message = git(repo, "log", "-1", "--format=%B", sha, "--").strip()
        names = git(repo, "diff-tree", "--no-commit-id", "-r", "--name-only", "--no-renames", "--root", sha, "--")
        found.append(Commit(sha, message, frozenset(n for n in names.splitlines() if n)))
    return found


def plan_of(window: Sequence[Commit], mentioned: Sequence[Sequence[str]] = ()) -> Plan:
    """One task per commit, its message (and the `mentioned` files) as the prompt, no files, no dependencies."""
    extra = list(mentioned) or [()] * len(window)
    tasks = [Task(id=f"c{i:02d}", prompt="\n".join([c.message or "(no message)", *names]), agent="a")
             for i, (c, names) in enumerate(zip(window, extra, strict=True))]
    return Plan.build(tasks, {"a": AgentSpec("a", "command")}, source="history")


def mentions(repo: Path, base: str, window: Sequence[Commit], count: int, seed: int) -> list[list[str]]:
    """`count` of each commit's changed files that exist at `base`, chosen with a fixed seed."""
    if not count:
        return []
    present = set(git(repo, "ls-tree", "-r", "--name-only", base).splitlines())
    rng = random.Random(seed)
    return [rng.sample(sorted(c.files & present), min(count, len(c.files & present))) for c in window]


def coupled(window: Sequence[Commit]) -> set[Pair]:
    ids = [f"c{i:02d}" for i in range(len(window))]
    return {(ids[i], ids[j]) for i, j in itertools.combinations(range(len(window)), 2)
            if window[i].files & window[j].files}


def measure(repo: Path, window: Sequence[Commit], history: int, mention: int = 0) -> Counts:
    """Analyse one window of commits against the parent of its first."""
    base = git(repo, "rev-parse", "--verify", f"{window[0].sha}^").strip()
    plan = plan_of(window, mentions(repo, base, window, mention, seed=int(base[:8], 16)))
    started = time.perf_counter()
    analysis = analyze(plan, repo, base=base, history=history)
    elapsed = time.perf_counter() - started
    truth = coupled(window)
    predicted = {_key(r.tasks) for r in analysis.risks}
    counts = Counts(predicted=len(predicted), true=len(truth), hits=len(predicted & truth),
                    pairs=len(window) * (len(window) - 1) // 2, seconds=elapsed)
    ranked = [_key(r.tasks) for r in analysis.risks[:TOP_K]]
    counts.top, counts.top_hits = len(ranked), sum(1 for pair in ranked if pair in truth)
    for kind in Kind:
        with_kind = {_key(r.tasks) for r in analysis.risks if any(e.kind is kind for e in r.evidence)}
        counts.by_kind[str(kind)] = [len(with_kind), len(with_kind & truth)]
    _count_files(counts, analysis, window)
    return counts


def _key(tasks: Iterable[str]) -> Pair:
    a, b = sorted(tasks)
    return a, b


def _count_files(counts: Counts, analysis: Analysis, window: Sequence[Commit]) -> None:
    """Inferred files (globs and directories left out) against the files each commit changed."""
    for tf, commit in zip(analysis.files, window, strict=True):
        inferred = {r.path for r in tf.files if not r.pattern}
        counts.files_inferred += len(inferred)
        counts.files_changed += len(commit.files)
        counts.files_hit += len(inferred & commit.files)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coupling", description=__doc__.splitlines()[2])
    parser.add_argument("repo", type=Path, help="a git repository (a bare one will do)")
    parser.add_argument("--commits", type=int, default=30, help="tasks per window (default 30)")
    parser.add_argument("--windows", type=int, default=1, help="windows of commits, going back (default 1)")
    parser.add_argument("--end", default="HEAD", help="the newest commit of the newest window (default HEAD)")
    parser.add_argument("--history", type=int, default=DEFAULT_HISTORY, help="commits of co-change history")
    parser.add_argument("--mention", type=int, default=0, help="changed files named in each prompt (default 0)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.commits < 2 or args.windows < 1 or args.history < 0 or args.mention < 0:
        parser.error("--commits must be at least 2, --windows at least 1, --history and --mention at least 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    total = Counts()
    windows = []
    for number in range(args.windows):
        window = commits(args.repo, args.end, args.commits, number * args.commits)
        if len(window) < 2:
            break
        counts = measure(args.repo, window, args.history, args.mention)
        total.add(counts)
        windows.append({"first": window[0].sha[:12], "last": window[-1].sha[:12], **counts.summary()})
    report = {"repo": str(args.repo), "end": args.end, "commits": args.commits, "history": args.history,
              "mention": args.mention, "windows": windows, "pooled": total.summary()}
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return
    for w in windows:
        print(f"{w['first']}..{w['last']}: precision {w['precision']} recall {w['recall']} "
              f"({w['hits']} of {w['predicted']} predicted, {w['coupled']} coupled of {w['pairs']} pairs)")
    pooled = report["pooled"]
    print(f"pooled: precision {pooled['precision']} recall {pooled['recall']} base rate {pooled['base_rate']} "
          f"top {TOP_K} {pooled['top']}; "
          f"by kind {json.dumps(pooled['by_kind'])}; files {json.dumps(pooled['files'])}; "
          f"analysis {pooled['analysis_s']} s")


if __name__ == "__main__":
    main()
