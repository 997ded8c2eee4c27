"""The demo's scripted stand-in for a coding agent: follows `@` directives in its prompt, offline.

Directives (one per line): `@sleep SECONDS`, `@say TEXT` (progress output), `@write PATH` … `@end` (file
content), `@append PATH TEXT`, `@fix-on-feedback PATH` … `@end` (written only when orchard's feedback is in the
prompt, i.e. on a retry). Anything else is prose and ignored.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path


def run(prompt: str, root: Path) -> None:
    """Carry out the directives of `prompt` inside `root`."""
    retry = "Feedback from orchard" in prompt
    lines = iter(prompt.splitlines())
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        if word == "@sleep":
            time.sleep(float(rest))
        elif word == "@say":
            print(rest, flush=True)
        elif word == "@append":
            path, _, text = rest.partition(" ")
            with (root / path).open("a", encoding="utf-8") as fh:
                fh.write(text + "\n")
        elif word in ("@write", "@fix-on-feedback"):
            body = _block(lines)
            if word == "@write" or retry:
                target = root / rest
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(body, encoding="utf-8")
                print(f"Edit {rest}", flush=True)


def _block(lines: Iterator[str]) -> str:
    """The lines up to `@end` (consumed from the shared iterator)."""
    out = []
    for line in lines:
        if line.strip() == "@end":
            break
        out.append(line)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    run(Path(sys.argv[1]).read_text(encoding="utf-8"), Path.cwd())
