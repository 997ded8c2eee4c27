"""orchard's own record of the integration branch tip: attempts start from it, merges extend it, and an agent
that moves or deletes `orchard/<run>/integration` gets it put back before anything reads it.

These run in worker threads; callers hold `ctx.ref_lock` so a merge and a check never interleave.
"""

from __future__ import annotations

from orchard.runtime.context import RunContext
from orchard.store import RunRow
from orchard.vcs import first_parent_messages, is_ancestor, read_ref, set_ref


def guard(ctx: RunContext) -> str | None:
    """Make the ref match the record; returns what an agent had moved it to (None if untouched)."""
    actual = read_ref(ctx.repo, ctx.integration_ref)
    if actual == ctx.integration_tip:
        return None
    if not set_ref(ctx.repo, ctx.integration_ref, ctx.integration_tip, actual, "orchard: restore integration"):
        return guard(ctx)  # it moved again between the read and the write
    return actual or "(deleted)"


def recorded_tip(ctx: RunContext, run: RunRow) -> str:
    """The tip to trust when a run resumes: the record, or the ref if it only adds this run's own merges (a crash
    after moving the ref and before recording it)."""
    recorded = run.integration_tip or run.base_commit
    actual = read_ref(ctx.repo, ctx.integration_ref)
    if actual and actual != recorded and is_ancestor(ctx.repo, recorded, actual):
        marker = f"Orchard-Run: {run.id}"
        if all(marker in message for message in first_parent_messages(ctx.repo, recorded, actual)):
            return actual
    return recorded
