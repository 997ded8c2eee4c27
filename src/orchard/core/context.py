"""What a task's prompt is told of the tasks it builds on (`context:`): each direct dependency's id and name, its
agent's own summary of what it did, the files its merged change touched and its merge commit. Pure text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SUMMARY_LIMIT = 4096  # characters of one attempt's summary kept in the store and shown to dependents
FILES_SHOWN = 50  # files of one parent's change listed in a prompt; the rest are counted
CUT_MARK = "\n[… summary cut at {limit} characters by orchard]"
HEADING = "## What the tasks you build on did"


@dataclass(frozen=True)
class ChangedFile:
    """One file of a merged change: its path and lines added and removed (None for a binary file)."""

    path: str
    added: int | None
    removed: int | None


@dataclass(frozen=True)
class ParentResult:
    """One merged dependency as its dependents' prompts describe it."""

    id: str
    name: str | None
    summary: str
    files: tuple[ChangedFile, ...]
    commit: str | None


def capped_summary(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """An agent's summary as kept: stripped, and cut at `limit` characters with a marker saying so."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + CUT_MARK.format(limit=limit)


def parents_section(parents: Sequence[ParentResult], mode: str) -> str:
    """The prompt section for `context: files | summary` ("" for `none`, or when nothing depends on anything)."""
    if mode == "none" or not parents:
        return ""
    blocks = [_parent_block(p, with_summary=mode == "summary") for p in parents]
    intro = ("This task builds on the work of the tasks below, which is merged into the branch your worktree "
             "starts from.")
    return f"{HEADING}\n\n{intro}\n\n" + "\n\n".join(blocks)


def _parent_block(parent: ParentResult, *, with_summary: bool) -> str:
    title = f"### {parent.id}" + (f": {parent.name}" if parent.name and parent.name != parent.id else "")
    lines = [title]
    if parent.commit:
        lines.append(f"Merge commit: {parent.commit}")
    if with_summary:
        lines.append("Its agent's summary:\n" + _quoted(parent.summary) if parent.summary
                     else "Its agent left no summary.")
    lines.append(_files(parent.files))
    return "\n".join(lines)


def _files(files: Sequence[ChangedFile]) -> str:
    if not files:
        return "Files changed: none"
    shown = [f"- {f.path} ({_stat(f)})" for f in files[:FILES_SHOWN]]
    more = [f"- … and {len(files) - FILES_SHOWN} more"] if len(files) > FILES_SHOWN else []
    return "Files changed:\n" + "\n".join([*shown, *more])


def _stat(f: ChangedFile) -> str:
    return "binary" if f.added is None or f.removed is None else f"+{f.added} -{f.removed}"


def _quoted(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines())
