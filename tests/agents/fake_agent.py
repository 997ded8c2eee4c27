"""A scripted fake coding agent for tests: carries out `@` directives found in its prompt file.

Directives, one per line (TEXT may use \\n for newlines):
  @sleep S                 sleep S seconds
  @write PATH TEXT         write a file (parents created)
  @append PATH TEXT        append a line
  @derive SRC DST PREFIX   write DST = PREFIX + the content of SRC (fails if SRC is missing)
  @print TEXT              print a progress line
  @summary TEXT            write TEXT to $ORCHARD_SUMMARY_FILE (the account of its work its dependents are told)
  @summary-link TARGET     make $ORCHARD_SUMMARY_FILE a symbolic link to TARGET (hostile: orchard must not follow it)
  @orchard ARGS            run "$ORCHARD_BIN" ARGS (split like a shell; {task} filled in), its output passed on;
                           its exit code is ignored (the log shows it)
  @exit N                  exit with code N now
  @if-feedback DIRECTIVE   run DIRECTIVE only when orchard's feedback section is in the prompt
  @unless-feedback DIRECTIVE
  @if-attempt N DIRECTIVE  run DIRECTIVE only on attempt N (from ORCHARD_ATTEMPT)
  @if-contains PATH TEXT DIRECTIVE / @unless-contains PATH TEXT DIRECTIVE   (TEXT is one word)
Rendezvous, so tests wait for an event instead of sleeping for it (a timeout exits 9 with a message on stderr, so a
test whose premise did not hold fails clearly instead of hanging):
  @barrier NAME N [S]      wait (at most S seconds, default 60) until N tasks of this run reached barrier NAME: each
                           leaves a marker in $FAKE_AGENT_RENDEZVOUS (else <repo>/.orchard/barriers)/<run>/NAME/<task>
                           (a timed-out one withdraws it). Only for tasks the run starts together (N <= parallel,
                           no dependency between them), and on the attempts that meet (`@if-attempt 1 @barrier ...`
                           when a retry must not wait)
  @touch PATH              create an empty file (parents created); PATH relative to the worktree, or absolute
  @record PATH             append "TASK ATTEMPT" (from ORCHARD_TASK_ID, ORCHARD_ATTEMPT) to PATH: which attempts
                           really started their agent, and how often
  @wait-for PATH [S]       wait (at most S seconds, default 60) until PATH exists; PATH may be a glob pattern, then
                           until something matches it
  @wait-gone PATH [S]      wait (at most S seconds, default 60) until nothing is at PATH (a glob pattern too)
Hostile ones, for fault injection:
  @git ARGS                run git with ARGS (split like a shell; {run} and {task} are filled in)
  @rmself                  delete the agent's own worktree
  @segv                    die of SIGSEGV
  @spew MB                 print MB megabytes, binary bytes and one endless line to stdout
  @daemon S                leave a child process behind that sleeps S seconds
  @daemon-escape S         leave a daemon that escapes every way it can: forked twice, in a session of its own, its
                           environment emptied and its working directory `/`; sleeps S seconds
  @ignore-term             ignore SIGTERM from then on
  @plant-git MARKS         plant, in the git directories its worktree's git uses, every hook, the config keys that run
                           commands (fsmonitor, hooksPath, filters, merge and diff drivers, aliases, pager, editor,
                           alternateRefsCommand, core.worktree), attributes naming them, an exclude of everything, a
                           bogus alternate, grafts and a shallow file; each planted program creates MARKS/<what> with
                           the environment it saw, so a test can tell which ran. Runs no git after planting.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

POLL_S = 0.01
RENDEZVOUS_TIMEOUT_S = 60.0
TIMED_OUT = 9  # the exit code of a rendezvous that did not happen in time


def main(prompt_path: str) -> int:
    prompt = Path(prompt_path).read_text(encoding="utf-8")
    feedback = "Feedback from orchard" in prompt
    attempt = os.environ.get("ORCHARD_ATTEMPT", "1")
    for raw in prompt.splitlines():
        line = raw.strip()
        while True:
            word, _, rest = line.partition(" ")
            if word == "@if-feedback":
                line = rest if feedback else ""
            elif word == "@unless-feedback":
                line = "" if feedback else rest
            elif word in ("@if-contains", "@unless-contains"):
                path, needle, line = [*rest.split(" ", 2), "", ""][:3]
                target = Path.cwd() / path
                found = target.exists() and needle in target.read_text(encoding="utf-8")
                line = line if found == (word == "@if-contains") else ""
            elif word == "@if-attempt":
                n, _, line = rest.partition(" ")
                line = line if n == attempt else ""
            else:
                break
        code = run(line, Path.cwd())
        if code is not None:
            return code
    return 0


def run(line: str, root: Path) -> int | None:
    word, _, rest = line.partition(" ")
    if word == "@sleep":
        time.sleep(float(rest))
    elif word in ("@write", "@append"):
        path, _, text = rest.partition(" ")
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        text = text.replace("\\n", "\n")
        with target.open("a" if word == "@append" else "w", encoding="utf-8") as fh:
            fh.write(text + ("\n" if word == "@append" else ""))
    elif word == "@derive":
        src, dst, prefix = ([*rest.split(" ", 2), "", ""])[:3]
        source = root / src
        if not source.exists():
            print(f"missing {src}", file=sys.stderr)
            return 3
        (root / dst).write_text(prefix + source.read_text(encoding="utf-8"), encoding="utf-8")
    elif word == "@print":
        print(rest, flush=True)
    elif word == "@summary":
        Path(os.environ["ORCHARD_SUMMARY_FILE"]).write_text(rest.replace("\\n", "\n"), encoding="utf-8")
    elif word == "@summary-link":
        os.symlink(rest, os.environ["ORCHARD_SUMMARY_FILE"])
    elif word == "@orchard":
        argv = shlex.split(rest.replace("{task}", os.environ["ORCHARD_TASK_ID"]))
        done = subprocess.run([os.environ["ORCHARD_BIN"], *argv], cwd=root, check=False, capture_output=True,
                              text=True)
        print(done.stdout, end="", flush=True)
        print(done.stderr, end="", file=sys.stderr, flush=True)
        print(f"orchard exited with {done.returncode}", flush=True)
    elif word in HOSTILE:
        HOSTILE[word](rest, root)
    elif word in RENDEZVOUS:
        return RENDEZVOUS[word](rest, root)
    elif word == "@exit":
        print(f"exiting with {rest}", file=sys.stderr, flush=True)
        return int(rest)
    return None


def _git(rest: str, root: Path) -> None:
    filled = rest.replace("{run}", os.environ["ORCHARD_RUN_ID"]).replace("{task}", os.environ["ORCHARD_TASK_ID"])
    subprocess.run(["git", *shlex.split(filled)], cwd=root, check=False)


def _rmself(root: Path) -> None:
    """Delete the worktree; in a sandbox, where it is a mount point, everything in it."""
    try:
        shutil.rmtree(root)
    except OSError:
        for entry in root.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def _spew(rest: str, root: Path) -> None:
    out = sys.stdout.buffer
    block = b"y" * 1023 + b"\n"
    for _ in range(int(float(rest) * 1024)):
        out.write(block)
    out.write(bytes(range(256)) * 64 + b"\n")
    out.write(b"z" * 3_000_000)  # one endless line, never terminated
    out.flush()


def _daemon(rest: str, root: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({float(rest)})"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid_file(root).write_text(str(child.pid))


def _pid_file(root: Path) -> Path:
    """Where a daemon's pid is left for the test: beside the task's link, `.orchard/worktrees/<run>/<task>.daemon`."""
    return _orchard_dir(root) / "worktrees" / os.environ["ORCHARD_RUN_ID"] / f"{os.environ['ORCHARD_TASK_ID']}.daemon"


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)


def _daemon_escape(rest: str, root: Path) -> None:
    pid_file = _pid_file(root)
    code = ("import os, sys, time\n"
            "if os.fork(): os._exit(0)\n"
            "os.setsid(); os.chdir('/'); open(sys.argv[1], 'w').write(str(os.getpid()))\n"
            "time.sleep(float(sys.argv[2]))\n")
    subprocess.run([sys.executable, "-c", code, str(pid_file), rest.strip()], env={}, cwd="/", check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _poll(pid_file.exists, 10)


HOOKS = ("applypatch-msg", "pre-applypatch", "post-applypatch", "pre-commit", "pre-merge-commit",
         "prepare-commit-msg", "commit-msg", "post-commit", "pre-rebase", "post-checkout", "post-merge", "pre-push",
         "pre-receive", "update", "proc-receive", "post-receive", "post-update", "reference-transaction",
         "push-to-checkout", "pre-auto-gc", "post-rewrite", "sendemail-validate", "fsmonitor-watchman",
         "post-index-change")


def _plant_git(rest: str, root: Path) -> None:
    marks = Path(rest.strip())
    marks.mkdir(parents=True, exist_ok=True)
    asked = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir", "--git-dir", "HEAD"],
                           cwd=root, check=True, capture_output=True, text=True).stdout.split()
    dirs, head = [Path(d) for d in asked[:2]], asked[2]
    tools = marks / "planted"
    tools.mkdir(exist_ok=True)

    def program(name: str) -> Path:
        script = tools / name
        script.write_text(f'#!/bin/sh\nenv > "{marks}/{name}"\ncat >/dev/null 2>&1\nexit 0\n')
        script.chmod(0o755)
        return script

    user_checkout = _orchard_dir(root).parent
    for git_dir in dict.fromkeys(dirs):
        (git_dir / "hooks").mkdir(exist_ok=True)
        for hook in HOOKS:
            shutil.copy(program(f"hook-{hook}"), git_dir / "hooks" / hook)
        alt_hooks = tools / "hooks"
        alt_hooks.mkdir(exist_ok=True)
        for hook in HOOKS:
            shutil.copy(program(f"hookspath-{hook}"), alt_hooks / hook)
        with (git_dir / "config").open("a", encoding="utf-8") as fh:
            fh.write(f"""[core]
\tfsmonitor = {program("fsmonitor")}
\thooksPath = {alt_hooks}
\tworktree = {user_checkout}
\talternateRefsCommand = {program("alternate-refs")}
\tpager = {program("pager")}
\teditor = {program("editor")}
\tsshCommand = {program("ssh")}
[alias]
\tcommit = !{program("alias-commit")}
\tstatus = !{program("alias-status")}
[filter "evil"]
\tclean = {program("filter-clean")}
\tsmudge = {program("filter-smudge")}
\trequired = true
[merge "evil"]
\tdriver = {program("merge-driver")} %O %A %B
[diff "evil"]
\ttextconv = {program("textconv")}
\tcommand = {program("diff-command")}
[diff]
\texternal = {program("diff-external")}
[uploadpack]
\tpackObjectsHook = {program("pack-objects-hook")}
""")
        info = git_dir / "info"
        info.mkdir(exist_ok=True)
        (info / "attributes").write_text("* filter=evil merge=evil diff=evil\n")
        (info / "exclude").write_text("*\n")
        (info / "grafts").write_text(f"{head}\n")  # the start commit without parents
        (git_dir / "shallow").write_text(f"{head}\n")
        if (git_dir / "objects").is_dir():  # the common directory
            with (git_dir / "objects" / "info" / "alternates").open("a", encoding="utf-8") as fh:
                fh.write(f"{marks}/no-such-objects\n")
    (root / ".gitattributes").write_text("* filter=evil merge=evil diff=evil\n")


HOSTILE: dict[str, Callable[[str, Path], object]] = {
    "@plant-git": _plant_git,
    "@git": _git,
    "@rmself": lambda rest, root: _rmself(root),
    "@segv": lambda rest, root: os.kill(os.getpid(), signal.SIGSEGV),
    "@spew": _spew,
    "@daemon": _daemon,
    "@record": lambda rest, root: _append(root / rest.strip(),
                                          f"{os.environ['ORCHARD_TASK_ID']} {os.environ['ORCHARD_ATTEMPT']}\n"),
    "@daemon-escape": _daemon_escape,
    "@ignore-term": lambda rest, root: signal.signal(signal.SIGTERM, signal.SIG_IGN),
}


def _poll(done: Callable[[], bool], timeout_s: float) -> bool:
    """Check `done` every POLL_S until it holds (True) or `timeout_s` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def _orchard_dir(root: Path) -> Path:
    """The `.orchard` directory the worktree lives in (`<repo>/.orchard/pool/<id>`)."""
    for parent in root.resolve().parents:
        if parent.name == ".orchard":
            return parent
    raise SystemExit(f"fake agent: {root} is not inside a .orchard directory")


def _barrier(rest: str, root: Path) -> int | None:
    name, count, timeout = [*rest.split(), str(RENDEZVOUS_TIMEOUT_S)][:3]
    shared = os.environ.get("FAKE_AGENT_RENDEZVOUS")  # writable inside orchard's sandbox, unlike .orchard/
    place = (Path(shared) if shared else _orchard_dir(root) / "barriers") / os.environ["ORCHARD_RUN_ID"] / name
    place.mkdir(parents=True, exist_ok=True)
    mine = place / os.environ["ORCHARD_TASK_ID"]
    mine.touch()
    if _poll(lambda: sum(1 for _ in place.iterdir()) >= int(count), float(timeout)):
        return None
    mine.unlink(missing_ok=True)  # a late peer must not pass a barrier this task no longer waits at
    arrived = sorted(p.name for p in place.iterdir())
    print(f"fake agent: barrier {name!r} timed out after {float(timeout):g} s: {len(arrived) + 1} of {count} tasks "
          f"arrived ({', '.join([mine.name, *arrived])}); were they started together?", file=sys.stderr, flush=True)
    return TIMED_OUT


def _touch(rest: str, root: Path) -> None:
    target = root / rest
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch()


def _wait_for(rest: str, root: Path) -> int | None:
    path, _, timeout = rest.partition(" ")
    pattern = str(root / path)
    limit = float(timeout or RENDEZVOUS_TIMEOUT_S)
    if _poll(lambda: bool(glob.glob(pattern)), limit):
        return None
    print(f"fake agent: nothing appeared at {pattern} within {limit:g} s", file=sys.stderr, flush=True)
    return TIMED_OUT


def _wait_gone(rest: str, root: Path) -> int | None:
    path, _, timeout = rest.partition(" ")
    pattern = str(root / path)
    limit = float(timeout or RENDEZVOUS_TIMEOUT_S)
    if _poll(lambda: not glob.glob(pattern), limit):
        return None
    print(f"fake agent: {pattern} was still there after {limit:g} s", file=sys.stderr, flush=True)
    return TIMED_OUT


RENDEZVOUS: dict[str, Callable[[str, Path], int | None]] = {
    "@barrier": _barrier,
    "@touch": _touch,
    "@wait-for": _wait_for,
    "@wait-gone": _wait_gone,
}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
