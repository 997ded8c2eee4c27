"""Keeping the user's repository's copies of a run's refs up to date with orchard's own repository.

A merge moves the integration ref in orchard's repository and asks for it to be published; the merge queue does
not wait. One publish runs at a time and carries every tip asked for while it ran, so publishing stays off the
queue's serial path however fast merges come. `flush` (end of session, before landing) waits for the last one and
mirrors the run's task branches too: those kept for inspection appear in the user's repository, the others go.
"""

from __future__ import annotations

import asyncio

from orchard.errors import GitError
from orchard.runtime.context import RunContext
from orchard.vcs.private import publish, ref_values


class Publisher:
    """The user's copy of one run's integration ref. Lives in the engine's event loop thread."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.published: str | None = None
        self.job: asyncio.Task[None] | None = None

    def want(self) -> None:
        """Publish orchard's recorded integration tip soon (after the publish in progress, if any)."""
        if self.job is None or self.job.done():
            self.job = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while (tip := self.ctx.integration.tip) != self.published:
            try:
                await asyncio.to_thread(publish, self.ctx.own, {self.ctx.integration.ref: tip})
            except GitError as exc:  # the next merge or the flush at the end tries again
                self.ctx.journal.noted(f"could not update {self.ctx.integration.ref.removeprefix('refs/heads/')} in "
                                       f"your repository: {exc}", level="warning")
                return
            self.published = tip

    async def flush(self) -> None:
        """Wait for the publish in progress, then bring every ref of the run in the user's repository in line."""
        if self.job is not None:
            await self.job
        await asyncio.to_thread(mirror_run, self.ctx)
        self.published = self.ctx.integration.tip


def mirror_run(ctx: RunContext) -> int:
    """The run's refs in the user's repository made the same as orchard's: the integration ref at orchard's
    record, task branches as orchard's repository has them (kept ones appear, merged ones go)."""
    prefix = f"refs/heads/orchard/{ctx.run_id}/task/"
    refs: dict[str, str | None] = dict(ref_values(ctx.own.repo, prefix))
    current = ref_values(ctx.own.user, prefix, ctx.integration.ref)
    refs.update({ref: None for ref in current if ref.startswith(prefix) and ref not in refs})
    refs[ctx.integration.ref] = ctx.integration.tip
    return publish(ctx.own, refs, current=current)


def integration_ref(branch: str) -> str:
    return "refs/heads/" + branch
