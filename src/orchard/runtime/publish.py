"""Keeping the user's repository's copies of a run's refs up to date with orchard's own repository.

A merge moves the integration ref in orchard's repository and asks for it to be published; the merge queue does
not wait. One publish runs at a time, at most one a second, and carries every tip asked for meanwhile, so
publishing (a fetch: four git processes) costs a few processes a second however fast merges come (in B2, 500
merges in 20 s, it would otherwise publish about every third merge and take a third of a core). `flush` (end of
session, before landing) publishes what is left and mirrors the run's task branches too: those kept for
inspection appear in the user's repository, the others go.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from orchard.errors import GitError, GitTimeout
from orchard.runtime.context import RunContext
from orchard.vcs.private import publish, ref_values

INTERVAL_S = 1.0


class Publisher:
    """The user's copy of one run's integration ref. Lives in the engine's event loop thread."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.published: str | None = None
        self.job: asyncio.Task[None] | None = None
        self.last_start = -INTERVAL_S  # monotonic time the last publish began
        self.hurry = asyncio.Event()  # set by `flush`: no more waiting between publishes

    def want(self) -> None:
        """Publish orchard's recorded integration tip soon (after the publish in progress, if any)."""
        if self.job is None or self.job.done():
            self.job = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while (tip := self.ctx.integration.tip) != self.published:
            if (wait := self.last_start + INTERVAL_S - time.monotonic()) > 0 and not self.hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.hurry.wait(), wait)
                tip = self.ctx.integration.tip  # merges go on meanwhile: publish the newest
            self.last_start = time.monotonic()
            try:
                await asyncio.to_thread(publish, self.ctx.own, {self.ctx.integration.ref: tip})
            except GitError as exc:  # the next merge or the flush at the end tries again
                self.ctx.journal.noted(f"could not update {self.ctx.integration.ref.removeprefix('refs/heads/')} in "
                                       f"your repository: {exc}", level="warning")
                return
            self.published = tip

    async def flush(self) -> None:
        """Publish what is left at once, then bring every ref of the run in the user's repository in line (one
        publish at a time: the user's refs are updated from the values last read)."""
        self.hurry.set()
        if self.job is not None:
            await self.job
        if await mirror_or_note(self.ctx):
            self.published = self.ctx.integration.tip


async def mirror_or_note(ctx: RunContext) -> bool:
    """`mirror_run` in a worker thread; a failure is noted, not raised (the user's refs are copies: the run goes
    on, its end is recorded, and `orchard land` publishes orchard's record first). False if it failed."""
    try:
        await asyncio.to_thread(mirror_run, ctx)
    except GitError as exc:
        if isinstance(exc, GitTimeout) and ctx.processes.stopping:
            raise
        ctx.journal.noted(f"could not bring the run's branches in your repository up to date: {exc}; orchard's "
                          "repository has them, and `orchard land` publishes the results", level="warning")
        return False
    return True


def mirror_run(ctx: RunContext) -> int:
    """The run's refs in the user's repository made the same as orchard's: the integration ref at orchard's
    record, task branches as orchard's repository has them (kept ones appear, merged ones go)."""
    prefix = f"refs/heads/orchard/{ctx.run_id}/task/"
    refs: dict[str, str | None] = dict(ref_values(ctx.own.repo, prefix))
    current = ref_values(ctx.own.user, prefix, ctx.integration.ref)
    refs.update({ref: None for ref in current if ref.startswith(prefix) and ref not in refs})
    refs[ctx.integration.ref] = ctx.integration.tip
    return publish(ctx.own, refs, current=current)

