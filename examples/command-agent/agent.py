#!/usr/bin/env python3
"""A scripted coding agent for orchard's `type: command` (stdlib only, deterministic, no model).

    python3 agent.py PROMPT_FILE

orchard runs it in the task's worktree with the prompt in PROMPT_FILE. It follows the prompt's directive lines and
ignores every other line (the task's prose, and what orchard adds: the tasks it builds on, feedback from a failed
verify):

    write PATH: TEXT     the file PATH (relative, inside the worktree) becomes the line TEXT
    append PATH: TEXT    TEXT is added to PATH as a new line (`append PATH:` adds an empty one)

One space after the colon separates it from TEXT; any further spaces are TEXT's own indentation.

It prints what it does (orchard shows it as the task's activity), leaves a summary for the tasks that build on this
one in $ORCHARD_SUMMARY_FILE, and exits 0; 1 when the prompt holds no directive, 2 on a bad one. orchard commits
what it changed, so it runs no git.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

VERBS = ("write", "append")


def directives(prompt: str) -> list[tuple[str, str, str]]:
    """(verb, path, text) of each directive line of the prompt, in order."""
    found = []
    for line in prompt.splitlines():
        verb, _, rest = line.partition(" ")
        path, colon, text = rest.partition(":")
        if verb in VERBS and colon and path.strip():
            found.append((verb, path.strip(), text.removeprefix(" ")))
    return found


def target(root: Path, path: str) -> Path:
    """PATH inside the worktree `root`; refuse absolute paths and any that lead out of it."""
    resolved = (root / path).resolve()
    if Path(path).is_absolute() or not resolved.is_relative_to(root.resolve()):
        raise ValueError(f"refusing a path outside the worktree: {path}")
    return resolved


def apply(root: Path, verb: str, path: str, text: str) -> None:
    """Carry out one directive in the worktree `root`."""
    file = target(root, path)
    file.parent.mkdir(parents=True, exist_ok=True)
    mode = "a" if verb == "append" else "w"
    with file.open(mode, encoding="utf-8") as out:
        out.write(text + "\n")


def main(argv: list[str]) -> int:
    """Follow the directives of the prompt file argv[1] in the current directory (the task's worktree)."""
    if len(argv) != 2:
        print("usage: agent.py PROMPT_FILE", file=sys.stderr)
        return 2
    steps = directives(Path(argv[1]).read_text(encoding="utf-8"))
    if not steps:
        print("nothing to do: the prompt has no `write PATH: TEXT` or `append PATH: TEXT` line", file=sys.stderr)
        return 1
    root = Path.cwd()
    try:
        for verb, path, text in steps:
            apply(root, verb, path, text)
            print(f"{verb} {path}", flush=True)
    except (OSError, ValueError) as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return 2
    touched = sorted({path for _, path, _ in steps})
    summary_file = os.environ.get("ORCHARD_SUMMARY_FILE")
    if summary_file:
        Path(summary_file).write_text(f"Wrote {', '.join(touched)}.\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
