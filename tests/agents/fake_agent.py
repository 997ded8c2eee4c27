"""A scripted fake coding agent for tests: carries out `@` directives found in its prompt file.

Directives, one per line (TEXT may use \\n for newlines):
  @sleep S                 sleep S seconds
  @write PATH TEXT         write a file (parents created)
  @append PATH TEXT        append a line
  @derive SRC DST PREFIX   write DST = PREFIX + the content of SRC (fails if SRC is missing)
  @print TEXT              print a progress line
  @exit N                  exit with code N now
  @if-feedback DIRECTIVE   run DIRECTIVE only when orchard's feedback section is in the prompt
  @unless-feedback DIRECTIVE
  @if-attempt N DIRECTIVE  run DIRECTIVE only on attempt N (from ORCHARD_ATTEMPT)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


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
    elif word == "@exit":
        print(f"exiting with {rest}", file=sys.stderr, flush=True)
        return int(rest)
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
