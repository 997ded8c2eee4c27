"""`orchard demo` (what `make demo` runs): on a terminal it shows the live dashboard, then the summary."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_orchard

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def test_demo_on_a_terminal_shows_dashboard_and_summary(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "140", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen([sys.executable, "-m", "orchard", "demo", "--dir", str(tmp_path)], stdin=follower,
                            stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closed: the demo has exited
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=30) == 0
    screen = ANSI.sub(b"", b"".join(chunks)).decode("utf-8", errors="replace")
    assert re.search(r"waiting \d+ \| running \d+ \| free \d+", screen), screen[-2000:]
    assert "activity" in screen and "elapsed" in screen  # the task table's header
    assert "6/6 merged" in screen and "speedup" in screen
    assert "6/6 merged · 7 attempts" in screen  # the demo's verify failure was retried with feedback
    assert "retry after verify_failed" in screen
    repo = tmp_path / "sample"
    branch = subprocess.run(["git", "-C", str(repo), "branch", "--list", "orchard/*/integration"],
                            capture_output=True, text=True, check=True).stdout.strip()
    files = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", branch], capture_output=True,
                           text=True, check=True).stdout.split()
    assert {"shop/models.py", "shop/api.py", "tests/test_total.py", "CHANGELOG.md"} <= set(files)
    report = re.search(r"report: (\S+report\.html)", screen)  # the demo ends saying where its HTML report is
    assert report and Path(report.group(1)).is_file() and Path(report.group(1)).is_relative_to(repo)


def test_demo_in_a_place_it_cannot_write_is_a_clear_error(tmp_path: Path) -> None:
    result = run_orchard("demo", "--dir", "/proc/self", cwd=tmp_path)
    output = result.out + result.err
    assert result.code == 2 and "cannot create the demo repository in /proc/self" in output, output
    assert "Traceback" not in output
