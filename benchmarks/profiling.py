"""Observing orchard from the outside: git calls counted and timed by engine step (every run), and with
`--profile` a thread stack sampler (a `py-spy top` inside the process), timing of the worktree lock, and cProfile.

Nothing here changes what orchard does: `GitCalls` wraps the git runner's spawn and wait, `timed_admin_lock` puts a
timing wrapper around the same lock object, and both are undone afterwards.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psutil

from orchard.vcs import git as runner


class GitCalls:
    """Counts and times every `git` child of orchard's one git runner (`orchard.vcs.git`) while active, by
    subcommand: from its spawn to the end of its output."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.wall: defaultdict[str, float] = defaultdict(float)
        self.step_count: Counter[str] = Counter()
        self.step_wall: defaultdict[str, float] = defaultdict(float)
        self._originals = (runner._spawn, runner._communicate)
        self._started: dict[int, float] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> GitCalls:
        spawn, communicate = self._originals

        def timed_spawn(argv: list[str], input: str | None, env: dict[str, str]) -> Any:
            t = time.perf_counter()
            child = spawn(argv, input, env)
            with self._lock:
                self._started[id(child.proc)] = t
            return child

        def timed_communicate(proc: Any, input: str | None, limit: float, argv: list[str]) -> Any:
            try:
                return communicate(proc, input, limit, argv)
            finally:
                self._record(["git", *argv], proc, sys._getframe(1))

        runner._spawn, runner._communicate = timed_spawn, timed_communicate
        return self

    def _record(self, argv: list[str], proc: Any, caller: Any) -> None:
        name, step = git_subcommand(argv), engine_step(caller)
        with self._lock:
            elapsed = time.perf_counter() - self._started.pop(id(proc), time.perf_counter())
            self.count[name] += 1
            self.wall[name] += elapsed
            self.step_count[step] += 1
            self.step_wall[step] += elapsed

    def __exit__(self, *exc: object) -> None:
        runner._spawn, runner._communicate = self._originals

    def table(self, per: int) -> list[dict[str, Any]]:
        rows = [{"git": name, "calls_per_task": round(self.count[name] / per, 2),
                 "ms_per_task": round(1000 * self.wall[name] / per, 2),
                 "ms_per_call": round(1000 * self.wall[name] / self.count[name], 2)} for name in self.count]
        return sorted(rows, key=lambda r: -r["ms_per_task"])

    def steps(self, per: int) -> list[dict[str, Any]]:
        """Git calls and their wall time per task, by the engine step that made them."""
        rows = [{"step": step, "calls_per_task": round(self.step_count[step] / per, 2),
                 "ms_per_task": round(1000 * self.step_wall[step] / per, 2)} for step in self.step_count]
        return sorted(rows, key=lambda r: -r["ms_per_task"])


def engine_step(frame: Any) -> str:
    """The outermost orchard `runtime` (or `vcs`) function on the stack below the engine's own loop: which step of
    a run a git call belongs to (worktree preparation, collecting the agent's work, the merge, the tidy-up …)."""
    marker = os.sep + "orchard" + os.sep
    found = "?"
    while frame is not None:
        file = frame.f_code.co_filename
        if marker in file:
            short = file[file.rfind(marker) + len(marker):]
            if frame.f_code.co_name in ("run_attempt", "merge_task"):
                break  # keep the step below the attempt / merge coroutine
            if short.startswith(("runtime" + os.sep, "vcs" + os.sep)) and not short.endswith("engine.py"):
                found = f"{short}:{frame.f_code.co_name}"
        frame = frame.f_back
    return found


def git_subcommand(argv: Sequence[str]) -> str:
    """`worktree add`, `merge-tree`, … from a git argv (skipping `-C DIR`, `-c KEY=VALUE` and other options)."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-C", "-c"):
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return f"{arg} {argv[i + 1]}" if arg == "worktree" and i + 1 < len(argv) else arg
    return argv[-1] if len(argv) > 1 else "?"


class LockTimer:
    """Stands in for a lock object (same behaviour) and adds up how long threads waited for it and held it."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.wait_s = 0.0
        self.hold_s = 0.0
        self.acquired = 0
        self._local = threading.local()

    def __enter__(self) -> LockTimer:
        t = time.perf_counter()
        self.lock.acquire()
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            self.wait_s += time.perf_counter() - t
            self.acquired += 1
            self._local.since = time.perf_counter()
        self._local.depth = depth + 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._local.depth -= 1
        if self._local.depth == 0:
            self.hold_s += time.perf_counter() - self._local.since
        self.lock.release()


@contextlib.contextmanager
def timed_admin_lock() -> Iterator[LockTimer]:
    """Time orchard's worktree-administration lock (`vcs.git.ADMIN_LOCK`) in every module that holds it."""
    from orchard.vcs import git as vgit
    from orchard.vcs import worktrees as vworktrees

    original = vgit.ADMIN_LOCK
    timer = LockTimer(original)
    for module in (vgit, vworktrees):
        setattr(module, "ADMIN_LOCK", timer)  # noqa: B010 - worktrees imports the name without re-exporting it
    try:
        yield timer
    finally:
        for module in (vgit, vworktrees):
            setattr(module, "ADMIN_LOCK", original)  # noqa: B010


class StackSampler:
    """A poor man's `py-spy top` inside the process: samples every thread's Python stack and counts, for samples
    that are inside orchard, the innermost orchard line ("own") and every orchard function on the stack ("total").
    The innermost non-orchard frame tells what that line was waiting for (a git child, SQLite, plain Python)."""

    def __init__(self, interval: float = 0.004) -> None:
        self.interval = interval
        self.samples = 0
        self.busy = 0
        self.own: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.leaf: Counter[str] = Counter()
        self.thread_cpu: dict[int, float] = {}  # native thread id → CPU seconds, last seen
        self._start_cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-sampler", daemon=True)

    def _read_threads(self) -> dict[int, float]:
        return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}

    def __enter__(self) -> StackSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = threading.get_ident()
        marker = os.sep + "orchard" + os.sep
        self._start_cpu = self._read_threads()
        while not self._stop.wait(self.interval):
            self.samples += 1
            if self.samples % 25 == 0:
                self.thread_cpu.update(self._read_threads())
            for tid, frame in sys._current_frames().items():
                if tid == me:
                    continue
                stack = []
                f: Any = frame
                while f is not None:
                    stack.append(f)
                    f = f.f_back
                inside = [fr for fr in stack if marker in fr.f_code.co_filename]
                if not inside or self._idle_loop(stack):
                    continue
                self.busy += 1
                first = inside[0]
                self.own[self._name(first, line=True)] += 1
                for name in {self._name(fr) for fr in inside}:
                    self.total[name] += 1
                leaf = stack[0]
                self.leaf[self._waiting_on(leaf)] += 1

    @staticmethod
    def _idle_loop(stack: list[Any]) -> bool:
        """The event loop waiting in its selector for something to happen."""
        return os.path.basename(stack[0].f_code.co_filename) == "selectors.py" and any(
            fr.f_code.co_name == "_run_once" for fr in stack)

    @staticmethod
    def _name(frame: Any, line: bool = False) -> str:
        path = frame.f_code.co_filename
        short = path[path.rfind(os.sep + "orchard" + os.sep) + 1:] if os.sep + "orchard" + os.sep in path else path
        name = f"{short}:{frame.f_code.co_name}"
        return f"{name}:{frame.f_lineno}" if line else name

    @staticmethod
    def _waiting_on(leaf: Any) -> str:
        file = os.path.basename(leaf.f_code.co_filename)
        if file in ("subprocess.py", "selectors.py"):
            return "waiting for a git child process (Popen.communicate)"
        if file == "common.py" and leaf.f_code.co_name == "__enter__":
            return "waiting for orchard's worktree lock (vcs.git.ADMIN_LOCK)"
        if file == "store.py":
            return f"SQLite call in store.py:{leaf.f_code.co_name}"
        return f"python ({file}:{leaf.f_code.co_name})"

    def top(self, n: int = 15) -> dict[str, Any]:
        busy = max(1, self.busy)
        main = threading.main_thread().native_id or 0
        mine = self._thread.native_id or 0
        used = {tid: cpu - self._start_cpu.get(tid, 0.0) for tid, cpu in self.thread_cpu.items() if tid != mine}
        return {"samples": self.samples, "thread_samples_in_orchard": self.busy,
                "cpu_s_event_loop_thread": round(used.get(main, 0.0), 3),
                "cpu_s_worker_threads": round(sum(v for k, v in used.items() if k != main), 3),
                "own": [{"where": k, "pct": round(100 * v / busy, 1)} for k, v in self.own.most_common(n)],
                "total": [{"where": k, "pct": round(100 * v / busy, 1)} for k, v in self.total.most_common(n)],
                "leaf": [{"what": k, "pct": round(100 * v / busy, 1)} for k, v in self.leaf.most_common(8)]}


def cprofile_top(func: Callable[[], Any], n: int = 15) -> tuple[Any, list[dict[str, Any]]]:
    """Run `func` under cProfile; its result and the top entries by internal time."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    result = prof.runcall(func)
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = file[file.rfind("orchard" + os.sep):] if "orchard" + os.sep in file else os.path.basename(file)
        rows.append({"where": f"{short}:{line}:{name}", "calls": calls, "tottime_s": round(tottime, 3),
                     "cumtime_s": round(cumtime, 3)})
    rows.sort(key=lambda r: -r["tottime_s"])
    return result, rows[:n]
