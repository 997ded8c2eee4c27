"""Keeping `orchard/<run>/integration` where orchard's record says it is: an agent that moves or deletes it gets
it put back before anything reads it.

These run in worker threads; callers hold `Integration.lock` so a merge and a check never interleave.
"""

from __future__ import annotations

from orchard.runtime.context import Integration, RunContext
from orchard.vcs import Repo, read_ref, set_ref


def guard(repo: Repo, integration: Integration) -> str | None:
    """Make the ref match the record; returns what an agent had moved it to (None if untouched)."""
    actual = read_ref(repo, integration.ref)
    if actual == integration.tip:
        return None
    if not set_ref(repo, integration.ref, integration.tip, actual, "orchard: restore integration"):
        return guard(repo, integration)  # it moved again between the read and the write
    return actual or "(deleted)"


def note_restored(ctx: RunContext, moved_to: str) -> None:
    """Tell the user an agent had moved the integration branch and orchard put it back."""
    ctx.journal.noted(f"{ctx.integration.ref.removeprefix('refs/heads/')} had been moved to {moved_to[:12]} by an "
                      f"agent; restored to {ctx.integration.tip[:12]}", level="warning")
