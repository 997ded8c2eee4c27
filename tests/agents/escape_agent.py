"""A hostile agent for the sandbox tests: tries to write where an agent must not, to leave processes behind and to
reach the network, and records what worked in `escape.json` in its worktree (which orchard commits).

argv: TARGETS, a JSON file holding an object naming what to try ("files": paths to append to, "refs": refs to move
with `git update-ref`, "daemon": a marker for the command line of the processes it leaves behind, "connect":
[host, port] to open a TCP connection to).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


def try_append(path: str) -> str:
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("written by an escaping agent\n")
    except OSError as exc:
        return f"refused: {exc.strerror}"
    return "written"


def try_git(*args: str) -> str:
    proc = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    return "written" if proc.returncode == 0 else f"refused: {proc.stderr.strip()[:200]}"


def try_connect(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=3):
            return "connected"
    except OSError as exc:
        return f"refused: {exc.strerror or exc}"


def leave_daemons(marker: str) -> None:
    """A `setsid` daemon and a double-forked one, both sleeping with `marker` in their command line."""
    code = f"import time; time.sleep(300)  # {marker}"
    subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    if os.fork() == 0:
        os.setsid()
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os._exit(0)


def main(targets: dict[str, Any]) -> int:
    results: dict[str, str] = {}
    for path in targets.get("files", []):
        results[str(path)] = try_append(str(path))
    for ref in targets.get("refs", []):
        results[str(ref)] = try_git("update-ref", str(ref), "HEAD")
    if targets.get("connect"):
        host, port = targets["connect"]
        results["connect"] = try_connect(str(host), int(port))
    if targets.get("daemon"):
        leave_daemons(str(targets["daemon"]))
    Path("escape.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    print("escape attempts recorded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))))
