"""What the benchmarks share: results and targets, timing, CPU and RSS sampling, temporary repositories, the fake
agent, and what is read from a run's events (merge-queue load, backlog, per-task phases).

The observing helpers (git call accounting, stack sampling, lock timing) are in `benchmarks.profiling`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from orchard.core.model import Plan as PlanType

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_CACHE = RESULTS / "cache"
FAKE_AGENT = ROOT / "tests" / "agents" / "fake_agent.py"
BASELINE_SCRIPT = ROOT / "benchmarks" / "baseline_git.sh"
PYTHON = sys.executable


# ---- configuration and results --------------------------------------------------------------------------------
@dataclass
class Config:
    """How a benchmark session runs."""

    quick: bool = False
    cache: Path = DEFAULT_CACHE
    profile: bool = False
    say: Callable[[str], None] = print  # progress lines (stderr in the CLI)


@dataclass(frozen=True)
class Target:
    """A target on a row's ratio (default) or on its measured value: `op` is "<=" or ">="."""

    op: str
    value: float
    on: str = "ratio"
    label: str | None = None  # shown instead of the generated text

    def check(self, value: float | None) -> bool | None:
        if value is None or math.isnan(value):
            return None
        return value <= self.value if self.op == "<=" else value >= self.value

    def text(self) -> str:
        if self.label:
            return self.label
        sign = "≤" if self.op == "<=" else "≥"
        suffix = " s" if self.on == "measured_s" else (" MB" if self.on == "measured_mb" else "")
        prefix = "" if self.on == "ratio" else "measured "
        return f"{prefix}{sign} {self.value:g}{suffix}"


@dataclass
class Result:
    """One row of the results table (a benchmark may produce several)."""

    id: str
    what: str
    measured: float | None = None
    baseline: float | None = None
    ratio: float | None = None
    target: Target | None = None
    unit: str = "s"
    measured_text: str | None = None
    baseline_text: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool | None:
        if self.error or self.target is None:
            return None
        value = self.ratio if self.target.on == "ratio" else self.measured
        return self.target.check(value)

    def to_json(self) -> dict[str, Any]:
        target = None
        if self.target:
            target = {"op": self.target.op, "value": self.target.value, "on": self.target.on,
                      "text": self.target.text()}
        return {"id": self.id, "what": self.what, "measured": self.measured, "baseline": self.baseline,
                "unit": self.unit, "ratio": self.ratio, "target": target, "passed": self.passed,
                "measured_text": self.measured_text or fmt(self.measured, self.unit),
                "baseline_text": self.baseline_text or fmt(self.baseline, self.unit),
                "details": self.details, "notes": self.notes, "error": self.error}


def fmt(value: float | None, unit: str) -> str:
    """A value with its unit for the table: seconds switch to ms below one second."""
    if value is None:
        return "—"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.2f} s"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "h":
        return f"{value:.2f} h"
    return f"{value:.3g}{(' ' + unit) if unit else ''}"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ---- git and repositories --------------------------------------------------------------------------------------
def isolate_git(home: Path) -> None:
    """No user or system git configuration leaks into the measurements; a fixed identity for every commit (this
    process, orchard in it, and every child process inherit it)."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "gitconfig"
    config.write_text("[user]\n\tname = Bench\n\temail = bench@example.invalid\n[gc]\n\tauto = 0\n"
                      "[maintenance]\n\tauto = false\n")
    os.environ["GIT_CONFIG_NOSYSTEM"] = "1"
    os.environ["GIT_CONFIG_GLOBAL"] = str(config)
    os.environ.pop("GIT_DIR", None)
    os.environ.pop("GIT_WORK_TREE", None)


def git(cwd: Path, *args: str, input: bytes | None = None) -> str:
    """Run git for setup or a baseline; raise on failure; return stdout."""
    proc = subprocess.run(["git", "-C", str(cwd), *args], input=input, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode()


def make_repo(root: Path, files: dict[str, str]) -> Path:
    """A repository at `root` on branch main whose one commit holds `files`."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def small_repo(root: Path, files: int = 20) -> Path:
    """The small repository of B2, B5 and B6: a README, an `out/` directory agents write into, a few sources."""
    content = {"README.md": "# bench\n", "out/.keep": ""}
    for i in range(files):
        content[f"src/mod{i:02d}.py"] = f"def f{i}():\n    return {i}\n"
    return make_repo(root, content)


def fs_type(path: Path) -> str:
    """The file system type `path` lives on (the mount point with the longest matching prefix)."""
    path = path.resolve()
    best, kind = "", "?"
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint.rstrip("/") or "/"
        inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, part.fstype
    return kind


def choose_scratch(wanted: Path | None) -> Path:
    """Where temporary repositories go: `wanted`, else /dev/shm when it is a tmpfs with room (this keeps a slow
    disk's file creation out of figures meant to measure orchard), else the system's temporary directory."""
    if wanted is not None:
        wanted.mkdir(parents=True, exist_ok=True)
        return wanted.resolve()
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and fs_type(shm) == "tmpfs" and shutil.disk_usage(shm).free > 2**31:
        return shm
    return Path(tempfile.gettempdir()).resolve()


@contextlib.contextmanager
def scratch(name: str) -> Iterator[Path]:
    """A temporary directory, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"orchard-bench-{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fake_agent_spec(name: str = "fake") -> dict[str, Any]:
    """Options of a `command` agent running the scripted fake agent of the test suite."""
    return {"name": name, "type": "command", "options": {"command": [PYTHON, str(FAKE_AGENT), "{prompt_file}"]}}


def sleepy_plan(sleep_s: float, *, tasks: int, parallel: int, prefix: str, source: str) -> PlanType:
    """`tasks` independent tasks of the fake agent, each sleeping `sleep_s` then writing `out/<id>.txt` (B6, B10)."""
    from orchard.core.model import AgentSpec, Plan, Task

    spec = fake_agent_spec()
    agent = AgentSpec(spec["name"], spec["type"], options=spec["options"])
    rows = [Task(id=f"{prefix}{i:02d}", prompt=f"@sleep {sleep_s}\n@write out/{prefix}{i:02d}.txt done\n",
                 agent=agent.name) for i in range(tasks)]
    return Plan.build(rows, {agent.name: agent}, parallel=parallel, source=source)


def copy_agent_command(source: Path) -> list[str]:
    """The instant agent: one tiny process that writes one file (`cp` of the worktree's README) into its `out/`.

    The source is in the worktree because a sandboxed agent (`sandbox: auto`) sees scratch directories on /dev/shm or
    /tmp only where they are bound; `source` (the baseline's copy) has the same few bytes."""
    del source
    return ["cp", "README.md", "{worktree}/out/{task_id}.txt"]


# ---- timing and resources --------------------------------------------------------------------------------------
class Stopwatch:
    """Wall time plus the CPU of this process (all its threads) and of its reaped children (git, agents)."""

    def __enter__(self) -> Stopwatch:
        self._proc = psutil.Process()
        self._t = time.perf_counter()
        cpu = self._proc.cpu_times()
        times = os.times()
        self._self = cpu.user + cpu.system
        self._children = times.children_user + times.children_system
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t
        cpu = self._proc.cpu_times()
        times = os.times()
        self.cpu_self = cpu.user + cpu.system - self._self
        self.cpu_children = times.children_user + times.children_system - self._children

    def summary(self, per: int = 1) -> dict[str, float]:
        return {"wall_s": self.wall, "cpu_self_s": self.cpu_self, "cpu_children_s": self.cpu_children,
                "wall_per_task_ms": 1000 * self.wall / per, "cpu_self_per_task_ms": 1000 * self.cpu_self / per,
                "cpu_children_per_task_ms": 1000 * self.cpu_children / per}


class PeakRss:
    """Samples one process's resident set size (that process only, not its children) until stopped."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.first = 0
        self.timeline: list[tuple[float, float]] = []  # (seconds since start, MB), about one per second
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            try:
                rss = self.proc.memory_info().rss
            except (psutil.Error, OSError):
                return
            self.first = self.first or rss
            self.peak = max(self.peak, rss)
            self.samples += 1
            now = time.perf_counter() - start
            if not self.timeline or now - self.timeline[-1][0] >= 1.0:
                self.timeline.append((round(now, 1), round(rss / 2**20, 1)))
            self._stop.wait(self.interval)


class EventLog:
    """An `on_event` observer keeping every event of a run as its flat dict (plus the float timestamp)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: Any) -> None:
        data = event.to_dict()
        data["t"] = event.ts
        self.events.append(data)

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind and all(e.get(k) == v for k, v in match.items())]


def merge_queue_busy(events: list[dict[str, Any]]) -> dict[str, float]:
    """How busy the one-at-a-time merge queue was, from the journal: each merge starts when its task reached
    `merging` or when the previous merge finished, whichever is later (the queue is first in, first out)."""
    queued = {e["task"]: e["t"] for e in events if e["type"] == "task.status" and e["status"] == "merging"}
    finished = [(e["t"], e["task"]) for e in events if e["type"] == "merge.finished"]
    if not finished:
        return {}
    started = min(e["t"] for e in events if e["type"] == "run.started")
    busy, previous = 0.0, started  # a task restored as `merging` (resume) has no `merging` event: queued at start
    for t_end, task in finished:
        start = max(queued.get(task, started), previous)
        busy += max(0.0, t_end - start)
        previous = t_end
    span = finished[-1][0] - started
    return {"merge_busy_s": busy, "run_span_s": span, "merge_queue_utilisation": busy / span if span else 0.0,
            "merge_mean_ms": 1000 * busy / len(finished)}


def merge_backlog(events: list[dict[str, Any]]) -> dict[str, Any]:
    """How the merge queue kept up: tasks waiting to merge (finished attempts not merged yet) and the time between
    merges, for each tenth of the run's merges in order."""
    backlog, peak, marks = 0, 0, []
    for e in events:
        if e["type"] == "task.status" and e.get("status") == "merging":
            backlog += 1
            peak = max(peak, backlog)
        elif e["type"] == "merge.finished":
            marks.append((e["t"], backlog))
            backlog -= 1
    if len(marks) < 10:
        return {"peak_waiting_to_merge": peak}
    tenth = len(marks) // 10
    deciles = []
    for k in range(10):
        chunk = marks[k * tenth:(k + 1) * tenth + 1]
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(chunk)]
        deciles.append({"merges": f"{k * 10}–{(k + 1) * 10}%",
                        "ms_between_merges": round(1000 * statistics.fmean(gaps), 1),
                        "waiting_to_merge": round(statistics.fmean(b for _, b in chunk))})
    return {"peak_waiting_to_merge": peak, "by_tenth": deciles}


def read_ndjson_events(path: Path) -> list[dict[str, Any]]:
    """Events written by `orchard run --json`, each with its timestamp also as seconds (`t`)."""
    import datetime
    import json

    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("ts"):
                event["t"] = datetime.datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()
                out.append(event)
    return out


class Every:
    """Calls `probe` about every `interval` seconds in a thread and keeps (seconds since start, value)."""

    def __init__(self, probe: Callable[[], float], interval: float = 1.0) -> None:
        self.probe = probe
        self.interval = interval
        self.timeline: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Every:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError):
                self.timeline.append((round(time.perf_counter() - start, 1), self.probe()))


def phases(events: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and max per task of each phase, from the journal: prepare (slot granted → agent about to start: the
    worktree), agent (the agent process), collect (agent exit → attempt finished: commit, checks), and merge
    (waiting for the merge queue plus the merge itself)."""
    at: dict[tuple[str, str], float] = {}
    agent: dict[str, float] = {}
    for e in events:
        if e["type"] == "task.status":
            at.setdefault((e["task"], e["status"]), e["t"])
        elif e["type"] in ("attempt.started", "attempt.finished"):
            at.setdefault((e["task"], e["type"]), e["t"])
            if e["type"] == "attempt.finished":
                agent[e["task"]] = e["duration_s"]
    out: dict[str, list[float]] = defaultdict(list)
    for task, took in agent.items():
        try:
            out["prepare_s"].append(at[task, "attempt.started"] - at[task, "running"])
            out["agent_s"].append(took)
            out["collect_s"].append(at[task, "attempt.finished"] - at[task, "attempt.started"] - took)
            out["merge_s"].append(at[task, "merged"] - at[task, "attempt.finished"])
        except KeyError:
            continue
    return {k: {"mean": round(statistics.fmean(v), 4), "max": round(max(v), 4)} for k, v in out.items() if v}


def timeline(events: list[dict[str, Any]], called: float, returned: float) -> dict[str, float]:
    """Where a run's wall time went, from its events: set-up before `run.started`, the wait for the first agent,
    the merge tail after the last attempt, and the tidy-up after the last merge (wall-clock timestamps)."""
    def first(kind: str) -> float:
        return float(min(e["t"] for e in events if e["type"] == kind))

    def last(kind: str) -> float:
        return float(max(e["t"] for e in events if e["type"] == kind))

    return {"setup_s": first("run.started") - called,
            "to_first_agent_s": first("attempt.started") - first("run.started"),
            "last_agent_to_last_merge_s": last("merge.finished") - last("attempt.finished"),
            "after_last_merge_s": returned - last("merge.finished")}
