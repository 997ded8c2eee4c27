"""Process supervision with real child processes: timeouts, process groups, bounded output, stdin, crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from orchard.agents import ExitInfo, Invocation, classify_exit
from orchard.agents.base import AttemptContext
from orchard.agents.command import CommandAdapter
from orchard.core.model import AgentSpec, Outcome, Task
from orchard.runtime.process import MAX_LINE, Supervision, run_process

PY = sys.executable


def run(code: str, tmp_path: Path, limits: Supervision | None = None, stdin: bytes | None = None,
        argv: tuple[str, ...] | None = None) -> tuple[ExitInfo, list[tuple[str, str]], Path]:
    lines: list[tuple[str, str]] = []
    log = tmp_path / "attempt.log"
    inv = Invocation(argv or (PY, "-c", code), tmp_path, {}, stdin)
    info = asyncio.run(run_process(inv, log, lambda line, stream: lines.append((line, stream)),
                                   limits or Supervision(timeout_s=30)))
    return info, lines, log


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def gone(pid: int, within: float = 5.0) -> bool:
    """True once `pid` has died (signals are delivered asynchronously)."""
    deadline = time.monotonic() + within
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def test_lines_are_streamed_per_stream_and_logged(tmp_path: Path) -> None:
    code = "import sys; print('out one'); print('err one', file=sys.stderr); print('out two')"
    info, lines, log = run(code, tmp_path)
    assert info.returncode == 0 and classify_exit(info).outcome is Outcome.SUCCESS
    assert ("out one", "stdout") in lines and ("err one", "stderr") in lines and ("out two", "stdout") in lines
    assert b"out one" in log.read_bytes() and b"err one" in log.read_bytes()
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_timeout_terms_the_group(tmp_path: Path) -> None:
    # a child that never installs a handler: the timeout fires whatever its start-up takes, even before Python runs
    started = time.monotonic()
    info, _, _ = run("import time; time.sleep(60)", tmp_path, Supervision(timeout_s=0.5, grace_s=0.5))
    assert info.timed_out and not info.stalled and info.signal in (signal.SIGTERM, signal.SIGKILL)
    assert classify_exit(info).outcome is Outcome.TIMEOUT
    assert time.monotonic() - started < 10


def test_stop_terms_then_kills_the_group(tmp_path: Path) -> None:
    # 'ready' comes only once SIGTERM is ignored (the grandchild inherits that) and the grandchild's pid is on disk
    code = ("import signal, time, subprocess, sys\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "open('child.pid', 'w').write(str(child.pid))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    stopped_at: list[float] = []

    async def supervise() -> ExitInfo:
        stop = asyncio.Event()

        def on_line(line: str, _stream: str) -> None:
            if line == "ready" and not stop.is_set():
                stopped_at.append(time.monotonic())
                stop.set()

        inv = Invocation((PY, "-c", code), tmp_path, {}, None)
        return await run_process(inv, tmp_path / "attempt.log", on_line, Supervision(timeout_s=60, grace_s=0.5),
                                 stop=stop)

    info = asyncio.run(supervise())
    ended = time.monotonic()
    assert stopped_at, "the child never said it was ready"
    assert info.signal == signal.SIGKILL and not info.timed_out and not info.stalled  # SIGTERM was ignored
    assert 0.5 <= ended - stopped_at[0] < 10  # the grace period was given, and no more than needed
    assert gone(int((tmp_path / "child.pid").read_text()))  # it ignored SIGTERM too: killed with the group


def test_daemon_left_behind_is_killed(tmp_path: Path) -> None:
    code = ("import subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
            "                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "open('daemon.pid', 'w').write(str(child.pid))\n")
    info, _, _ = run(code, tmp_path)
    assert info.returncode == 0
    assert gone(int((tmp_path / "daemon.pid").read_text()))


def test_endless_line_is_cut_and_log_is_capped(tmp_path: Path) -> None:
    code = "import sys; sys.stdout.write('x' * 3_000_000); sys.stdout.flush()"
    info, lines, log = run(code, tmp_path, Supervision(timeout_s=30, log_cap=100_000))
    assert info.returncode == 0
    assert all(len(line) <= MAX_LINE + 40 for line, _ in lines)
    assert lines and lines[0][0].endswith("[orchard: line truncated]")
    data = log.read_bytes()
    assert len(data) < 100_000 + 200 and b"log capped" in data


def test_binary_output_is_decoded_with_replacement(tmp_path: Path) -> None:
    info, lines, _ = run("import sys; sys.stdout.buffer.write(bytes(range(256)) + b'\\nok\\n')", tmp_path)
    assert info.returncode == 0 and ("ok", "stdout") in lines


def test_stall_without_output(tmp_path: Path) -> None:
    # The stall clock starts at spawn, so on a loaded machine it may fire before 'hello': a stall all the same (no
    # output for 0.7 s), and the wall-clock timeout is far away, so what is asserted holds either way.
    info, _, _ = run("import time; print('hello', flush=True); time.sleep(30)", tmp_path,
                     Supervision(timeout_s=30, stall_timeout_s=0.7, grace_s=0.5))
    assert info.stalled and not info.timed_out
    assert 0.7 <= info.duration_s < 20  # measured from before the spawn, so never below the stall timeout
    assert classify_exit(info).outcome is Outcome.STALLED


def test_crash_by_signal_and_nonzero_exit(tmp_path: Path) -> None:
    info, _, _ = run("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", tmp_path)
    assert info.signal == signal.SIGSEGV and classify_exit(info).outcome is Outcome.CRASHED
    info, _, _ = run("import sys; sys.exit(3)", tmp_path)
    assert info.returncode == 3 and classify_exit(info).outcome is Outcome.AGENT_ERROR


def test_missing_binary_is_a_setup_failure(tmp_path: Path) -> None:
    info, _, log = run("", tmp_path, argv=("/nonexistent/agent-binary",))
    assert info.spawn_error and classify_exit(info).outcome is Outcome.SETUP_FAILED
    assert b"cannot start" in log.read_bytes()


def test_stdin_gets_the_prompt_or_dev_null(tmp_path: Path) -> None:
    _, lines, _ = run("import sys; print('got:' + sys.stdin.read())", tmp_path, stdin=b"the prompt")
    assert ("got:the prompt", "stdout") in lines
    _, lines, _ = run("import sys; print('got:' + repr(sys.stdin.read()))", tmp_path)
    assert ("got:''", "stdout") in lines


def _ctx(tmp_path: Path, **options: object) -> AttemptContext:
    spec = AgentSpec("a", "command", None, options)
    task = Task(id="t1", prompt="do 'it' now; $(rm -rf /)", agent="a")
    prompt_file = tmp_path / "t1.1.md"
    prompt_file.write_text(task.prompt)
    return AttemptContext("run1", task, 2, spec, tmp_path, task.prompt, prompt_file)


def test_command_adapter_placeholders_env_and_prompt_routes(tmp_path: Path) -> None:
    adapter = CommandAdapter()
    ctx = _ctx(tmp_path, command=("agent", "{prompt_file}", "--task={task_id}", "{worktree}", "#{attempt}", "{x}"),
               env={"EXTRA": "1"})
    inv = adapter.invocation(ctx)
    assert inv.argv == ("agent", str(ctx.prompt_file), "--task=t1", str(tmp_path), "#2", "{x}")
    assert inv.stdin is None and inv.cwd == tmp_path
    assert inv.env["ORCHARD_TASK_ID"] == "t1" and inv.env["ORCHARD_ATTEMPT"] == "2"
    assert inv.env["ORCHARD_RUN_ID"] == "run1" and inv.env["ORCHARD_PROMPT_FILE"] == str(ctx.prompt_file)
    assert inv.env["ORCHARD_WORKTREE"] == str(tmp_path) and inv.env["EXTRA"] == "1"
    stdin_inv = adapter.invocation(_ctx(tmp_path, command=("agent",), prompt_via="stdin"))
    assert stdin_inv.stdin == ctx.prompt.encode() and stdin_inv.argv == ("agent",)
    arg_inv = adapter.invocation(_ctx(tmp_path, command=("agent", "-p"), prompt_via="arg"))
    assert arg_inv.argv == ("agent", "-p", ctx.prompt)  # one argv item: no shell ever sees it
    inline = adapter.invocation(_ctx(tmp_path, command=("agent", "--message={prompt}"), prompt_via="arg"))
    assert inline.argv == ("agent", f"--message={ctx.prompt}")


def test_command_parser_reports_activity_and_failure_tail(tmp_path: Path) -> None:
    parser = CommandAdapter().parser(_ctx(tmp_path, command=("agent",)))
    assert parser.feed("Editing src/x.py", "stdout") == "Editing src/x.py"
    assert parser.feed("warning: something", "stderr") is None
    report = parser.finish(ExitInfo(returncode=2))
    assert report.outcome is Outcome.AGENT_ERROR and "warning: something" in report.detail
