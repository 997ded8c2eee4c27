"""Process supervision: the one place agent, verify and probe processes are spawned.

Each child runs in its own session (so its own process group) with argv only, stdin from bytes or /dev/null,
stdout and stderr read in bounded chunks and split into bounded lines, appended to a capped log file and handed to a
callback. A wall-clock timeout, a stall (no output) or the caller's stop event sends SIGTERM to the group, then SIGKILL
after a grace period; whatever the group left behind is killed when the leader exits. The child is always reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from orchard.agents.base import ExitInfo, Invocation, Stream

CHUNK = 64 * 1024
MAX_LINE = 64 * 1024  # longer lines are cut, so one endless line cannot grow memory
DEFAULT_LOG_CAP = 50 * 1024 * 1024
GRACE_S = 5.0

LineCallback = Callable[[str, Stream], None]


@dataclass
class Supervision:
    """Limits for one process."""

    timeout_s: float
    stall_timeout_s: float | None = None
    grace_s: float = GRACE_S
    log_cap: int = DEFAULT_LOG_CAP


def append_log(path: Path, text: str) -> None:
    """Append orchard's own note to an attempt log, creating it private (0600) like everything under .orchard/."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(text)


class CappedLog:
    """Appends to a log file until a byte cap, then writes one marker line and drops the rest."""

    def __init__(self, path: Path, cap: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.file: BinaryIO = os.fdopen(fd, "ab")
        self.cap = cap
        self.written = 0
        self.capped = False

    def write(self, data: bytes) -> None:
        if self.capped:
            return
        room = self.cap - self.written
        if len(data) > room:
            self.file.write(data[: max(0, room)])
            self.file.write(b"\n[orchard: log capped at %d bytes; further output dropped]\n" % self.cap)
            self.capped = True
        else:
            self.file.write(data)
        self.written += len(data)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class _Reader:
    """Splits one pipe into bounded lines; logs them (secrets redacted) and hands them on."""

    def __init__(self, stream: Stream, log: CappedLog, on_line: LineCallback, touch: Callable[[], None],
                 redact: Callable[[bytes], bytes]) -> None:
        self.stream, self.log, self.on_line, self.touch, self.redact = stream, log, on_line, touch, redact
        self.buffer = bytearray()
        self.skipping = False  # inside an over-long line whose head was already delivered

    async def pump(self, pipe: asyncio.StreamReader) -> None:
        while chunk := await pipe.read(CHUNK):
            self.touch()
            self._split(chunk)
        if self.buffer and not self.skipping:
            self.log.write(self.redact(bytes(self.buffer)))
            self._emit(bytes(self.buffer))

    def _split(self, chunk: bytes) -> None:
        start = 0
        while (nl := chunk.find(b"\n", start)) != -1:
            if self.skipping:  # the rest of an over-long line: logged, not delivered again
                self.log.write(self.redact(chunk[start:nl]) + b"\n")
            else:
                self.buffer += chunk[start:nl]
                self.log.write(self.redact(bytes(self.buffer)) + b"\n")
                self._emit(bytes(self.buffer[:MAX_LINE]))
            self.buffer.clear()
            self.skipping = False
            start = nl + 1
        if self.skipping:
            self.log.write(self.redact(chunk[start:]))
            return
        self.buffer += chunk[start:]
        if len(self.buffer) > MAX_LINE:
            self.log.write(self.redact(bytes(self.buffer)))
            self._emit(bytes(self.buffer[:MAX_LINE]) + b" [orchard: line truncated]")
            self.buffer.clear()
            self.skipping = True

    def _emit(self, raw: bytes) -> None:
        self.on_line(raw.decode("utf-8", errors="replace").rstrip("\r"), self.stream)


def kill_group(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def run_process(
    inv: Invocation,
    log_path: Path,
    on_line: LineCallback,
    limits: Supervision,
    *,
    on_spawn: Callable[[int], None] | None = None,
    base_env: Mapping[str, str] | None = None,
    redact: Callable[[bytes], bytes] | None = None,
    stop: asyncio.Event | None = None,
) -> ExitInfo:
    """Run one invocation to the end under `limits`; never raises for the child's own failures.

    Setting `stop` ends the child as a timeout would (SIGTERM to the group, SIGKILL after the grace period), but the
    ExitInfo says neither timed out nor stalled; one already set when the child starts ends it at once."""
    started = time.monotonic()
    env = {**(os.environ if base_env is None else base_env), **inv.env}
    log = CappedLog(log_path, limits.log_cap)
    try:
        proc = await asyncio.create_subprocess_exec(
            *inv.argv, cwd=inv.cwd, env=env, start_new_session=True,
            stdin=asyncio.subprocess.PIPE if inv.stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=CHUNK,
        )
    except OSError as exc:
        log.write(f"[orchard: cannot start {inv.argv[0]!r}: {exc}]\n".encode())
        log.close()
        return ExitInfo(None, spawn_error=f"cannot start {inv.argv[0]!r}: {exc.strerror or exc}")
    if on_spawn:
        on_spawn(proc.pid)
    last_output = [time.monotonic()]

    def touch() -> None:
        last_output[0] = time.monotonic()

    assert proc.stdout and proc.stderr
    scrub = redact or (lambda data: data)
    readers = [
        asyncio.create_task(_Reader("stdout", log, on_line, touch, scrub).pump(proc.stdout)),
        asyncio.create_task(_Reader("stderr", log, on_line, touch, scrub).pump(proc.stderr)),
    ]
    feeder = asyncio.create_task(_feed(proc, inv.stdin))
    try:
        timed_out, stalled = await _watch(proc, limits, started, last_output, stop)
    finally:
        kill_group(proc.pid, signal.SIGKILL)  # daemons the agent left in its group die with it
        await _reap(proc)
        await _drain(readers, feeder)
        log.close()
    rc = proc.returncode
    sig = -rc if rc is not None and rc < 0 else None
    return ExitInfo(rc if sig is None else None, sig, timed_out, stalled, duration_s=time.monotonic() - started)


async def _feed(proc: asyncio.subprocess.Process, data: bytes | None) -> None:
    if data is None or proc.stdin is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.close()


async def _watch(proc: asyncio.subprocess.Process, limits: Supervision, started: float,
                 last_output: list[float], stop: asyncio.Event | None) -> tuple[bool, bool]:
    """Wait for exit; on timeout, stall or `stop`, terminate the group. Returns (timed_out, stalled)."""
    exited = asyncio.create_task(proc.wait())
    waits: list[asyncio.Task[Any]] = [exited]
    if stop is not None:
        waits.append(asyncio.create_task(stop.wait()))
    deadline = started + limits.timeout_s
    try:
        while True:
            now = time.monotonic()
            wait = deadline - now
            if limits.stall_timeout_s:  # output only pushes this deadline later: wake at it, then look again
                wait = min(wait, last_output[0] + limits.stall_timeout_s - now)
            if wait <= 0:
                break
            await asyncio.wait(waits, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                return False, False
            if stop is not None and stop.is_set():
                await terminate(proc, limits.grace_s)
                return False, False
    finally:
        for waiting in waits:
            waiting.cancel()
    stalled = now < deadline
    await terminate(proc, limits.grace_s)
    return not stalled, stalled


async def terminate(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM to the group, SIGKILL after `grace_s` if the leader is still alive."""
    if proc.returncode is not None:
        return
    kill_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout=grace_s)
    except TimeoutError:
        kill_group(proc.pid, signal.SIGKILL)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Wait for the leader, which was just sent SIGKILL with its group (a session leader cannot leave its group).
    Not `proc.kill()`: subprocess.Popen polls before signalling, which can reap a child that just died before
    asyncio's watcher does, and then its exit status is lost (reported as 255)."""
    await proc.wait()


async def _drain(readers: list[asyncio.Task[None]], feeder: asyncio.Task[None]) -> None:
    """Let readers finish what is buffered; a grandchild that escaped the group must not hold us forever."""
    _, pending = await asyncio.wait([*readers, feeder], timeout=2.0)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass(frozen=True)
class BriefRun:
    """What a short command printed (stdout, else stderr), its exit status, or why it could not run."""

    returncode: int | None
    output: str = ""
    problem: str = ""


def run_briefly(argv: Sequence[str], timeout_s: float, *, cwd: Path | None = None) -> BriefRun:
    """Run a short command synchronously (a `--version` probe): argv only, stdin closed, its own process group,
    killed whole at the time limit. Never raises for the command's own failures."""
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", start_new_session=True, cwd=cwd)
    except OSError as exc:
        return BriefRun(None, problem=str(exc))
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, signal.SIGKILL)
        proc.communicate()
        return BriefRun(None, problem=f"no answer within {timeout_s:g} s")
    return BriefRun(proc.returncode, out.strip() or err.strip())


def spawn_detached(argv: Sequence[str], *, cwd: Path, log: Path) -> int:
    """Start a command that outlives its caller (the web dashboard's `orchard retry`): argv only, stdin closed,
    its own session, its output appended to `log`; returns its pid. OSError when it cannot be started."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True)
    return proc.pid


def daemonize(log: Path) -> bool:
    """Detach this process from whoever started it (a node's keeper): True in the detached child, which is in a
    session of its own with its output appended to `log` and stdin closed; False in the parent, which should exit
    at once (its starter waits for that, not for the child)."""
    if os.fork():
        return False
    os.setsid()
    with log.open("ab") as out, open(os.devnull, "rb") as nothing:
        os.dup2(nothing.fileno(), 0)
        os.dup2(out.fileno(), 1)  # the starter's pipes close as the parent goes: they are not the child's
        os.dup2(out.fileno(), 2)
    return True
