"""The dashboard's buttons (`orchard web --allow-actions`): cancel a task, retry one, through the code `orchard
cancel TASK` and `orchard retry TASK` run (`runtime.requests`; the retry is that very command, started detached).

Only the dashboard's own pages can ask: a POST, carrying the server's CSRF token in a header (which a page of another
site cannot set without a CORS preflight, which this server never grants), and from the same origin when the browser
says where it comes from."""

from __future__ import annotations

import asyncio
import hmac
import sys
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from orchard.core.model import TaskStatus
from orchard.errors import OrchardError
from orchard.runtime.lock import live_holder
from orchard.runtime.process import spawn_detached
from orchard.runtime.requests import request_cancel, steerable
from orchard.store import Store

if TYPE_CHECKING:
    from orchard.web.app import Site

CSRF_HEADER = "x-orchard-csrf"
RETRYABLE = (TaskStatus.FAILED, TaskStatus.CONFLICT, TaskStatus.BLOCKED)


def refused(site: Site, request: Request) -> str | None:
    """Why the request may not act, or None."""
    if not site.actions:
        return "this dashboard is read-only (start it with --allow-actions)"
    if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), site.csrf):
        return "missing or wrong CSRF token: actions come from the dashboard's own page"
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return f"cross-site request from {origin}"
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return "cross-site request"
    return None


async def act_on(site: Site, request: Request) -> Response:
    """POST /api/cancel/TASK or /api/retry/TASK (`?run=`: default the latest run)."""
    why = refused(site, request)
    if why:
        return JSONResponse({"error": why}, status_code=403)
    action, task = request.path_params["action"], request.path_params["task"]
    if action not in ("cancel", "retry"):
        return JSONResponse({"error": f"no action {action!r}"}, status_code=404)
    run_id = request.query_params.get("run")
    try:
        said = await asyncio.to_thread(_cancel if action == "cancel" else _retry, site, task, run_id)
    except OrchardError as exc:
        return JSONResponse({"error": str(exc)}, status_code=409)
    return JSONResponse({"ok": said})


def _cancel(site: Site, task: str, run_id: str | None) -> str:
    store = Store(site.layout.state_db)
    try:
        journal = steerable(store, run_id)
        request = request_cancel(journal, [task])
    finally:
        store.close()
    return f"asked run {journal.run_id} to cancel {task} (request {request})"


def _retry(site: Site, task: str, run_id: str | None) -> str:
    """`orchard retry TASK --run RUN`, started in the background once it is clear it can go."""
    from orchard.errors import UsageError

    store = Store(site.layout.state_db)
    try:
        run = store.run(run_id)
        status = store.task(run.id, task).status
    finally:
        store.close()
    if (live_holder(site.layout.lock_file) or {}).get("run") == run.id:
        raise UsageError(f"run {run.id} is live: retry {task} once it has finished")
    if status not in RETRYABLE:
        raise UsageError(f"task {task} is {status}: only failed, conflicted or blocked tasks are retried")
    root = site.layout.root.parent
    log = site.layout.run_dir(run.id) / "web-actions.log"
    pid = spawn_detached([sys.executable, "-m", "orchard", "-C", str(root), "retry", task, "--run", run.id],
                         cwd=root, log=log)
    return f"started orchard retry {task} --run {run.id} (pid {pid}; its output: {log})"
