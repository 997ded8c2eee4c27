"""Delivering the run's notifications (`notify:` of a plan) without holding the run up.

The notifier observes the run's journal: each event is turned into notifications (`core.notify`) on the event loop,
never inside the journal's call, and queued for the entries told of its kind. One worker per entry delivers its
queue in order: a command (argv, placeholders filled in per element, stdin closed, through `runtime.process`), a
webhook (a JSON POST from the orchestrator, never from a sandbox, in a thread of its own) or `notify-send`. Each try
waits at most the entry's `timeout`, failed ones are tried `retries` more times with a growing pause, and a failure is
a warning note in the journal, never the run's. At the session's end the notifier waits for what is still queued at
most the longest busy entry's timeout budget (`budget_s`, capped at `DRAIN_CAP_S`), so `run_finished` goes out
before the process exits while a receiver that hangs delays the end by no more than that. Everything sent passes
through the run's redactor.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import shlex
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchard.agents.base import Invocation
from orchard.core.events import OrchardEvent, RunStarted
from orchard.core.journal import RunJournal
from orchard.core.model import Notify
from orchard.core.notify import Notices, Notification, fill, shown_url
from orchard.core.redact import Redactor
from orchard.runtime.process import Supervision, append_log, run_process

log = logging.getLogger(__name__)

BACKOFF_S = 0.5  # the pause before the first retry, doubling
BACKOFF_MAX_S = 30.0
DRAIN_CAP_S = 60.0  # the most a session's end waits for notifications still queued
QUEUE_MAX = 200  # notifications queued per entry; more are dropped (and counted)
RESPONSE_MAX = 64 * 1024  # of a webhook's answer, read and thrown away
GRACE_S = 1.0  # a command past its timeout: SIGTERM, then SIGKILL this much later


@dataclass
class _Channel:
    """One entry of `notify:` (`number` counted from 1, as the plan's errors are), its queue and how it fares."""

    number: int
    entry: Notify
    queue: asyncio.Queue[Notification] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    worker: asyncio.Task[None] | None = None
    busy: bool = False  # delivering one now
    failing: bool = False  # its last delivery failed (noted once until one succeeds again)
    undelivered: int = 0
    dropped: int = 0
    told: int = 0  # failures noted one by one

    @property
    def name(self) -> str:
        entry = self.entry
        what = (f"command {entry.command[0]}" if entry.command else f"webhook {shown_url(entry.webhook)}"
                if entry.webhook else "desktop")
        return f"notify[{self.number}] ({what})"

    @property
    def budget_s(self) -> float:
        """How long one notification may take with every retry (a process past its timeout has its grace period to
        end): the most the session's end waits for it."""
        pauses = sum(min(BACKOFF_MAX_S, BACKOFF_S * 2.0**n) for n in range(self.entry.retries))
        each = self.entry.timeout_s + (0.0 if self.entry.webhook is not None else GRACE_S)
        return each * (self.entry.retries + 1) + pauses


class Notifier:
    """The observer and the workers of one session's notifications; `close` drains them, within a bound."""

    def __init__(self, journal: RunJournal, entries: tuple[Notify, ...], *, redactor: Redactor, log_path: Path,
                 cwd: Path, environ: Mapping[str, str]) -> None:
        self._journal, self._redactor, self._log, self._cwd = journal, redactor, log_path, cwd
        self._environ = dict(environ)
        self._loop = asyncio.get_running_loop()
        self._notices = Notices()
        self._channels = [_Channel(number, entry) for number, entry in enumerate(entries, start=1)]
        self._started = False
        self._unready: list[str] = []  # notes for the journal once the run is recorded
        for channel in self._channels:
            if channel.entry.desktop and shutil.which("notify-send", path=self._environ.get("PATH")) is None:
                self._unready.append(f"{channel.name}: desktop notifications need notify-send, which is not on "
                                     "PATH: this entry tells nothing")
            else:
                channel.worker = self._loop.create_task(self._work(channel))

    @staticmethod
    def attach(journal: RunJournal, entries: tuple[Notify, ...], *, redactor: Redactor, log_path: Path, cwd: Path,
               environ: Mapping[str, str]) -> Notifier | None:
        """A notifier subscribed to `journal` (in the running event loop), or None for a plan without `notify`."""
        if not entries:
            return None
        notifier = Notifier(journal, entries, redactor=redactor, log_path=log_path, cwd=cwd, environ=environ)
        journal.subscribe(notifier)
        return notifier

    def __call__(self, event: OrchardEvent) -> None:
        """The observer: called by the journal after a commit; what the event tells is worked out on the loop, once
        the journal's call is over (a note of ours then is a transition of its own, not one inside another's)."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: the session is over
            self._loop.call_soon_threadsafe(self._take, event)

    def _take(self, event: OrchardEvent) -> None:
        if isinstance(event, RunStarted) and not self._started:
            self._started = True
            for text in self._unready:
                self._note(text)
        budget = self._journal.plan.budget_usd if self._started else None
        for notification in self._notices.notifications(event, budget_usd=budget):
            for channel in self._channels:
                if notification.kind in channel.entry.events and channel.worker is not None:
                    self._queue(channel, notification)

    def _queue(self, channel: _Channel, notification: Notification) -> None:
        try:
            channel.queue.put_nowait(notification)
        except asyncio.QueueFull:
            channel.dropped += 1
            if channel.dropped == 1:
                self._note(f"{channel.name}: {QUEUE_MAX} notifications wait already; further ones are dropped")

    async def _work(self, channel: _Channel) -> None:
        while True:
            notification = await channel.queue.get()
            channel.busy = True
            try:
                await self._deliver(channel, notification)
            except Exception:  # a bug here must cost one notification, never the run or the worker
                log.exception("%s: delivering %s failed", channel.name, notification.kind.value)
                channel.undelivered += 1
            finally:
                channel.busy = False
                channel.queue.task_done()

    async def _deliver(self, channel: _Channel, notification: Notification) -> None:
        """Try, then retry with a doubling pause; a failure after the last try is noted (once while it lasts)."""
        problem = ""
        for attempt in range(channel.entry.retries + 1):
            if attempt:
                await asyncio.sleep(min(BACKOFF_MAX_S, BACKOFF_S * 2.0 ** (attempt - 1)))
            problem = await self._send(channel, notification)
            if not problem:
                channel.failing = False
                return
        channel.undelivered += 1
        log.warning("%s: %s not delivered: %s", channel.name, notification.kind.value, problem)
        if not channel.failing:
            channel.failing, channel.told = True, channel.told + 1
            tries = channel.entry.retries + 1
            self._note(f"{channel.name}: could not deliver {notification.kind.value} ({tries} "
                       f"{'try' if tries == 1 else 'tries'}): {problem}; the run goes on (further failures of "
                       "this entry are counted at the end)")

    async def _send(self, channel: _Channel, notification: Notification) -> str:
        """One try: "" when delivered, else what went wrong."""
        entry, redact = channel.entry, self._redactor
        if entry.webhook is not None:
            body = json.dumps(_redacted(notification.to_dict(), redact)).encode()
            return await _in_thread(lambda: post(entry.webhook or "", body, entry.timeout_s), entry.timeout_s)
        if entry.command is not None:
            argv = fill(entry.command, {k: redact(v) for k, v in notification.values().items()})
        else:  # desktop; the title and the message start with orchard's own words, never with `-`
            argv = ("notify-send", f"orchard: {notification.kind.value}", redact(notification.message))
        return await self._run(channel, argv)

    async def _run(self, channel: _Channel, argv: tuple[str, ...]) -> str:
        timeout = channel.entry.timeout_s
        try:
            append_log(self._log, self._redactor(f"[orchard: {channel.name}: {shlex.join(argv)}]\n"))
            info = await run_process(Invocation(argv, self._cwd), self._log, _ignore_line,
                                     Supervision(timeout, None, GRACE_S), base_env=self._environ,
                                     redact=self._redactor.bytes)
        except (OSError, ValueError) as exc:  # the log cannot be written (a full disk), an argument it refuses
            return f"cannot run it: {exc}"
        if info.spawn_error:
            return info.spawn_error
        if info.timed_out:
            return f"no end within {timeout:g} s"
        if info.returncode != 0:
            return f"exit {info.returncode}" if info.returncode is not None else f"signal {info.signal}"
        return ""

    def _note(self, text: str) -> None:
        """A warning in the journal; notifications are never the run's failure, so neither is this one's."""
        try:
            self._journal.noted(text, level="warning")
        except Exception:  # a full disk, a closed store: the log has it, the run goes on
            log.exception("could not journal: %s", text)

    async def close(self) -> None:
        """The session ends: wait for what is queued (at most the longest busy entry's budget, capped at
        `DRAIN_CAP_S`), then stop the workers and say what was not delivered."""
        await asyncio.sleep(0)  # the last events' `_take` (scheduled before this) queues their notifications
        busy = [c for c in self._channels if c.worker is not None and (c.busy or not c.queue.empty())]
        waited = min(DRAIN_CAP_S, max((c.budget_s for c in busy), default=0.0))
        if busy:
            joins = [asyncio.ensure_future(c.queue.join()) for c in busy]
            try:
                await asyncio.wait(joins, timeout=waited)
            finally:
                for join in joins:
                    join.cancel()
        left = {c.number: c.queue.qsize() + (1 if c.busy else 0) for c in self._channels}  # before the cancel
        workers = [c.worker for c in self._channels if c.worker is not None]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for channel in self._channels:
            missed = channel.undelivered + channel.dropped + left[channel.number]
            if missed > channel.told:
                self._note(f"{channel.name}: {missed} notification(s) not delivered in this session"
                           + (f" ({left[channel.number]} still waiting after {waited:g} s)"
                              if left[channel.number] else ""))


def _ignore_line(_line: str, _stream: str) -> None:
    """A notification command's output goes to the log only."""


def _redacted(data: Mapping[str, Any], redact: Callable[[str], str]) -> dict[str, Any]:
    """The notification's JSON with every text passed through the redactor (numbers need none)."""
    return {key: redact(value) if isinstance(value, str) else value for key, value in data.items()}


async def _in_thread(call: Callable[[], str], timeout_s: float) -> str:
    """`call()` in a daemon thread of its own, waited for at most `timeout_s`: a receiver that never answers holds
    neither the event loop nor, at exit, the process (the default executor's threads are joined at exit)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()

    def settle(result: str) -> None:
        if not done.done():
            done.set_result(result)

    def run() -> None:
        try:
            result = call()
        except BaseException as exc:  # the thread's end is one failed delivery, never the process's
            result = f"failed: {exc!r}"
        with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
            loop.call_soon_threadsafe(settle, result)

    threading.Thread(target=run, name="orchard-notify", daemon=True).start()
    try:
        return await asyncio.wait_for(done, timeout_s)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is answered as a failure: its notification goes to the URL the plan names or
    nowhere."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def post(url: str, body: bytes, timeout_s: float) -> str:
    """POST `body` (JSON) to `url`; "" on a 2xx answer, else what went wrong (never the URL: it may hold a
    token)."""
    request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - http(s) only: `plan.notify`
                                     headers={"Content-Type": "application/json", "User-Agent": "orchard"})
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(RESPONSE_MAX)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}" + (" (redirects are not followed)" if 300 <= exc.code < 400 else "")
    except urllib.error.URLError as exc:
        return f"cannot reach it: {exc.reason}"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return f"failed: {exc.__class__.__name__}: {exc}"
    return ""
