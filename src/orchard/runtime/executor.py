"""Where an attempt's workspace half runs (`runtime.workspace.run_workspace`): the executor seam. The driver half
(`runtime.attempt`) builds the job and the sink; an executor runs the one workspace function somewhere and
returns its result. `LocalExecutor` runs it in this process, on this machine's host; an executor for other machines
runs the same function there, so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from orchard.runtime.context import Host, RunContext
from orchard.runtime.workspace import AttemptJob, AttemptSink, WorkspaceResult, run_workspace


class Executor(Protocol):
    """Runs attempts' workspace halves."""

    async def run(self, job: AttemptJob, sink: AttemptSink) -> WorkspaceResult:
        """Run `job` to its result, telling `sink` what happens as it happens."""
        ...

    def slots(self) -> int | None:
        """How many attempts it can run at once (None: as many as the run's `parallel`)."""
        ...

    def close(self) -> None:
        """The session ends: let go of what it holds."""
        ...


# What a session is given to make its executor once its context exists (`Options.executor`; the CLI's
# `--executor ray` gives `cluster.executor.ray_executor`): the run's id, orchard's repository and its redactor.
ExecutorFactory = Callable[[RunContext], Executor]


class LocalExecutor:
    """The workspace half in orchard's own process, on this machine (`host`)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    async def run(self, job: AttemptJob, sink: AttemptSink) -> WorkspaceResult:
        return await run_workspace(job, self.host, sink)

    def slots(self) -> int | None:
        return None

    def close(self) -> None:
        """Nothing to let go of: the host is the session's."""
