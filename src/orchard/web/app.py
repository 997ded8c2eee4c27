"""`orchard web`: the live dashboard in a browser, an ASGI app (Starlette, served by uvicorn) reading the state
store, the attempt logs and orchard's repository; it holds no state of its own, so it goes on showing a run that
ends, crashes or resumes.

Routes: `/` the runs and the current run's tasks, kept up to date over server-sent events (`/events`); `/task/ID`
one task with its attempts (the machine each ran on), its log followed live (`/events/log`) and its diff;
`/api/status`, `/api/runs`, `/api/attempts`, `/api/diff` the same as JSON or text. With a token (any host but
loopback), every request must carry it (`?token=`, then a cookie); without one, nothing at all is served."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from orchard.core.eta import run_eta
from orchard.core.safe_text import safe_text
from orchard.errors import OrchardError
from orchard.runtime.changes import task_range
from orchard.runtime.layout import Layout
from orchard.runtime.lock import live_holder
from orchard.store import Store
from orchard.ui.html_report import timeline_fragment
from orchard.ui.report import last_seen, run_rows, status_document
from orchard.ui.run_report import attempt_doc, report_document
from orchard.vcs import Repo, find_repo
from orchard.vcs.lines import diff_text
from orchard.vcs.private import open_own_repository
from orchard.web.actions import act_on
from orchard.web.pages import index_page, task_page

TICK_S = 0.5  # how often a feed looks at the store for something new
COOKIE = "orchard_token"


@dataclass(frozen=True)
class Site:
    """What the app serves from: the repository's `.orchard/` (there may be no run yet), the token, and whether
    its pages may act (`actions`: cancel and retry, each POST carrying `csrf`, which only its own pages know)."""

    layout: Layout
    token: str | None = None
    actions: bool = False
    csrf: str = ""

    def git(self) -> Repo:
        """orchard's repository (task branches, merges), found when a diff is asked for."""
        return open_own_repository(find_repo(self.layout.root.parent), self.layout.git_dir).repo


def make_app(site: Site) -> Starlette:
    """The dashboard's ASGI app."""
    middleware = [Middleware(BaseHTTPMiddleware, dispatch=_guard(site.token))] if site.token else []
    async def index(request: Request) -> Response:
        return HTMLResponse(index_page(request.query_params.get("run"), csrf=site.csrf if site.actions else None))

    async def act(request: Request) -> Response:
        return await act_on(site, request)

    async def task(request: Request) -> Response:
        return HTMLResponse(task_page(request.path_params["task"], request.query_params.get("run")))

    async def runs(request: Request) -> Response:
        return await _json(site, run_rows)

    async def status(request: Request) -> Response:
        return await _json(site, lambda store: _status(site, store, request.query_params.get("run")))

    async def diff(request: Request) -> Response:
        return await _diff(site, request.path_params["task"], request.query_params.get("run"))

    async def attempts(request: Request) -> Response:
        task_id, run_id = request.path_params["task"], request.query_params.get("run")
        return await _json(site, lambda store: [attempt_doc(a) for a in store.attempts(store.run(run_id).id, task_id)])

    async def events(request: Request) -> Response:
        return _sse(_status_feed(site, request.query_params.get("run")))

    async def timeline(request: Request) -> Response:
        return await _timeline(site, request.query_params.get("run"))

    async def log_events(request: Request) -> Response:
        return _sse(_log_feed(site, request.path_params["task"], request.query_params.get("run")))

    routes = [Route("/", index), Route("/task/{task}", task), Route("/api/runs", runs), Route("/api/status", status),
              Route("/api/diff/{task}", diff), Route("/api/attempts/{task}", attempts),
              Route("/fragment/timeline", timeline), Route("/events", events),
              Route("/events/log/{task}", log_events), Route("/api/{action:str}/{task}", act, methods=["POST"])]
    return Starlette(routes=routes, middleware=middleware)


Dispatch = Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]


def _guard(token: str) -> Dispatch:
    """Every request carries the token (query, cookie or bearer header), else 401; a good query token becomes a
    cookie, so the page's own requests and feeds carry it."""
    async def dispatch(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        given = (request.query_params.get("token") or request.cookies.get(COOKIE)
                 or request.headers.get("authorization", "").removeprefix("Bearer "))
        if not given or not hmac.compare_digest(given, token):
            return PlainTextResponse("orchard web: a token is required (the one `orchard web` printed)", 401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response
    return dispatch


def _open(site: Site) -> Store | None:
    return Store(site.layout.state_db) if site.layout.state_db.exists() else None


async def _json(site: Site, read: Callable[[Store], Any]) -> Response:
    def work() -> Any:
        store = _open(site)
        if store is None:
            return None
        try:
            return read(store)
        finally:
            store.close()
    try:
        return JSONResponse(await asyncio.to_thread(work))
    except OrchardError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)


def _status(site: Site, store: Store, run_id: str | None) -> dict[str, Any] | None:
    """The run's `status --json` document (default: the latest run), as of now or its last sign of life."""
    if not store.runs():
        return None
    run = store.run(run_id)
    live = (live_holder(site.layout.lock_file) or {}).get("run") == run.id
    now = time.time() if live else (last_seen(store, run.id) or time.time())
    doc = status_document(store, run.id, now=now, eta=run_eta(store, run.id, now=now) if live else None)
    doc["live"] = live
    return doc


async def _diff(site: Site, task_id: str, run_id: str | None) -> Response:
    def work() -> str:
        store = _open(site)
        if store is None:
            return "no runs yet"
        try:
            run = store.run(run_id)
            git = site.git()
            found = task_range(git, store.task(run.id, task_id), store.attempts(run.id, task_id))
        finally:
            store.close()
        return safe_text(diff_text(git, *found)) if found else "no change to show yet"
    try:
        return PlainTextResponse(await asyncio.to_thread(work))
    except OrchardError as exc:
        return PlainTextResponse(str(exc), status_code=404)


async def _timeline(site: Site, run_id: str | None) -> Response:
    """The run's timeline as the HTML report draws it (its text escaped there), for the dashboard to show."""
    def work() -> str:
        store = _open(site)
        if store is None or not store.runs():
            return ""
        try:
            run = store.run(run_id)
            doc = report_document(store, run.id, now=time.time(), files={}, logs={})
        finally:
            store.close()
        return timeline_fragment(doc)
    try:
        return HTMLResponse(await asyncio.to_thread(work))
    except OrchardError as exc:
        return PlainTextResponse(str(exc), status_code=404)


def _sse(feed: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(feed, media_type="text/event-stream", headers={"Cache-Control": "no-store"})


async def _status_feed(site: Site, run_id: str | None) -> AsyncIterator[str]:
    """The status document whenever it changes (a new event, a new run, the session's liveness)."""
    sent = ""
    while True:
        store = await asyncio.to_thread(_open, site)
        try:
            doc = await asyncio.to_thread(_status, site, store, run_id) if store else None
        except OrchardError as exc:
            doc = {"error": str(exc)}
        finally:
            if store:
                store.close()
        text = json.dumps(doc)
        if text != sent:
            sent = text
            yield f"data: {text}\n\n"
        else:
            yield ": idle\n\n"  # a comment: keeps the connection and notices a client gone
        await asyncio.sleep(TICK_S)


async def _log_feed(site: Site, task_id: str, run_id: str | None) -> AsyncIterator[str]:
    """The task's latest attempt's log as it grows: each new piece as one event (made visible: `safe_text`)."""
    path, offset = None, 0
    while True:
        latest = await asyncio.to_thread(_latest_log, site, task_id, run_id)
        if latest != path:
            path, offset = latest, 0
            yield f"event: attempt\ndata: {json.dumps(str(latest) if latest else '')}\n\n"
        chunk = await asyncio.to_thread(_read_from, path, offset) if path else b""
        if chunk:
            offset += len(chunk)
            yield f"data: {json.dumps(safe_text(chunk.decode('utf-8', errors='replace')))}\n\n"
        else:
            yield ": idle\n\n"
        await asyncio.sleep(TICK_S)


def _latest_log(site: Site, task_id: str, run_id: str | None) -> Path | None:
    store = _open(site)
    if store is None:
        return None
    try:
        attempts = store.attempts(store.run(run_id).id, task_id)
    except OrchardError:
        return None
    finally:
        store.close()
    return Path(attempts[-1].log_path) if attempts else None


def _read_from(path: Path, offset: int, limit: int = 65536) -> bytes:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read(limit)
    except OSError:
        return b""
