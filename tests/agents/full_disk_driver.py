"""The full-disk scenario, run inside a bubblewrap mount namespace whose DISK is a small tmpfs (`--size`): a
repository there, a run whose three agents wait at a gate, the disk filled to the last byte, the gate opened; then
the space freed and the run resumed. Prints one JSON report for tests/test_disk.py to check.

usage: full_disk_driver.py DISK SIGNALS FAKE_AGENT
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

TASKS = ("a", "b", "c")


def main(disk: Path, signals: Path, agent: Path) -> dict[str, object]:
    repo = disk / "repo"
    _init(repo)
    plan = signals / "plan.yaml"
    plan.write_text(_plan(signals, agent))
    orchard = [sys.executable, "-m", "orchard"]
    proc = subprocess.Popen([*orchard, "run", str(plan), "--min-free-disk", "1MB"], cwd=repo, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not all((signals / f"starts-{t}").exists() for t in TASKS) and proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the agents never reached their gate")
        time.sleep(0.02)
    filler = disk / "filler"
    with filler.open("wb") as out:  # to the last byte
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    started = time.monotonic()
    (signals / "go").touch()
    try:
        _, first_err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, first_err = proc.communicate()
    first_s = time.monotonic() - started
    filler.unlink()
    resumed = subprocess.run([*orchard, "resume", "--min-free-disk", "1MB"], cwd=repo, capture_output=True,
                             text=True, stdin=subprocess.DEVNULL, timeout=120)
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        statuses = dict(db.execute("SELECT task_id, status FROM tasks"))
        attempts = db.execute("SELECT task_id, number, outcome FROM attempts ORDER BY task_id, number").fetchall()
    log = subprocess.run(["git", "-C", str(repo / ".orchard" / "git"), "log", "--first-parent", "--format=%s",
                          "--branches=orchard/*/integration"], capture_output=True, text=True).stdout
    return {"first_code": proc.returncode, "first_s": first_s, "first_err": first_err,
            "resume_code": resumed.returncode, "resume_err": resumed.stderr, "statuses": statuses,
            "attempts": attempts, "merges": log.splitlines(),
            "starts": {t: (signals / f"starts-{t}").read_text().count("started") for t in TASKS}}


def _init(repo: Path) -> None:
    repo.mkdir()
    (repo / "README.md").write_text("full disk\n")
    for args in (["init", "-q", "-b", "main"], ["add", "README.md"],
                 ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "init"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _plan(signals: Path, agent: Path) -> str:
    tasks = "".join(f"  - id: {t}\n    prompt: |\n      @append {signals}/starts-{t} started\n"
                    f"      @wait-for {signals}/go\n      @write {t}.txt {t}\n" for t in TASKS)
    # retries: 0, so an attempt the full disk ended that counted as a failure would fail its task for good;
    # unconfined, since this driver already runs inside bubblewrap
    return (f"sandbox: none\nparallel: 4\ndefaults: {{agent: fake, retries: 0}}\nagents:\n"
            f'  fake: {{type: command, command: ["{sys.executable}", "{agent}", "{{prompt_file}}"]}}\n'
            f"tasks:\n{tasks}")


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))))
