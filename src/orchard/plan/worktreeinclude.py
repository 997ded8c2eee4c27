"""The repository's `.worktreeinclude` read as patterns with their line numbers, for `orchard plan` to show and
`orchard doctor` to check; copying what it names into worktrees is `runtime.environment`'s."""

from __future__ import annotations

from pathlib import Path

WORKTREEINCLUDE = ".worktreeinclude"  # the file `runtime.environment` gives git (Claude Code and Codex read it too)


def include_lines(root: Path) -> list[tuple[int, str]]:
    """(line number, pattern) of each pattern of `root`'s `.worktreeinclude`, in git-ignore syntax (blank lines and
    `#` comments left out, trailing spaces trimmed); none when there is no such file or it cannot be read."""
    try:
        text = (root / WORKTREEINCLUDE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        pattern = line.rstrip(" ")
        if pattern.strip() and not pattern.startswith("#"):
            found.append((number, pattern))
    return found
