"""orchard: run many AI coding agents in parallel on one git repository.

Library use: `orchard.run(plan_or_path, repo=..., parallel=..., on_event=callback)` (or `await orchard.run_async`),
returning a `RunResult`; events are the typed classes in `orchard.core.events`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RunResult", "TaskResult", "load_plan", "resume", "resume_async", "run", "run_async"]

if TYPE_CHECKING:
    from orchard.api import resume, resume_async, run, run_async
    from orchard.core.results import TaskResult
    from orchard.plan import load as load_plan
    from orchard.runtime.session import RunResult


def __getattr__(name: str) -> Any:
    """Import the heavy parts only when used, so `import orchard` stays cheap."""
    if name in ("run", "run_async", "resume", "resume_async"):
        from orchard import api

        return getattr(api, name)
    if name == "load_plan":
        from orchard.plan import load

        return load
    if name == "RunResult":
        from orchard.runtime.session import RunResult

        return RunResult
    if name == "TaskResult":
        from orchard.core.results import TaskResult

        return TaskResult
    raise AttributeError(name)
