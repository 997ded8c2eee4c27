"""What the user is told of a run (`notify:` of a plan): which journal events become which notifications, what each
says, how a command's placeholders are filled in, and which parts of a webhook URL are secret. Pure: events in,
values out; `runtime.notify` delivers them.

The kinds (`NotifyEvent`), from the journal's events:

- `run_finished`: `run.finished`, with the run's status and its summary figures.
- `task_failed`: a task ended `failed` or `conflict`. Not `blocked`: the dependency's own failure was told, and one
  failure with many dependents would send as many notifications.
- `paused`: tasks paused for their agent's rate limit, with `until`; once per rate limit (tasks paused for the same
  agent until the same time are told once).
- `budget_exhausted`: the attempts' cost reached the run's `budget_usd` (the moment the scheduler starts nothing new;
  again if a raised budget is reached), or the run ended `budget_exhausted` without that having been told.
- `needs_attention`: something the user must act on: an attempt that `tampered` with their git directory, a verify
  that fails (or cannot run) on the untouched base, a result that removed lines other tasks merged (`task.warning`),
  a `run.note` marked `attention` (a lock in their repository, a landing refused, their checkout changed by an
  unconfined agent), and the run held by the machine's `limits` (at most once every 10 minutes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from orchard.core.events import (
    AttemptFinished,
    OrchardEvent,
    PreflightChecked,
    RunFinished,
    RunHeld,
    RunNote,
    RunStarted,
    TaskStatusChanged,
    TaskWarning,
    iso,
)
from orchard.core.model import NotifyEvent, Outcome, RunStatus, TaskStatus
from orchard.core.safe_text import safe_line

PLACEHOLDERS = ("event", "run", "task", "status", "message")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MESSAGE_MAX = 500  # characters of a notification's message
HOLD_QUIET_S = 600.0  # a held run is told at most this often
FIGURES = ("tasks", "merged", "failed", "blocked", "cost_usd", "wall_s")  # of the summary, in `run_finished`
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:(?P<user>[^@/?#]*)@)?(?P<host>[^@/?#]*)(?P<rest>.*)$",
                  re.DOTALL)


@dataclass(frozen=True)
class Notification:
    """One thing to tell: its kind, the run, the task (None for the run's), a status, one line of text, when, and
    the kind's own fields (`until` of a pause, the figures of a finished run)."""

    kind: NotifyEvent
    run: str
    task: str | None
    status: str
    message: str
    ts: str
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_dict(self) -> dict[str, Any]:
        """The JSON a webhook receives."""
        return {"event": self.kind.value, "run": self.run, "task": self.task, "status": self.status,
                "message": self.message, "ts": self.ts, **self.extra}

    def values(self) -> dict[str, str]:
        """What a command's placeholders are filled in with (`task`: "" for the run's own)."""
        return {"event": self.kind.value, "run": self.run, "task": self.task or "", "status": self.status,
                "message": self.message}


def fill(argv: Sequence[str], values: Mapping[str, str]) -> tuple[str, ...]:
    """`argv` with each `{name}` of `PLACEHOLDERS` replaced in every element (other braces stay as written): each
    element stays one argument, whatever the values hold, and no shell reads them."""
    def one(part: str) -> str:
        return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), part)

    return tuple(one(part) for part in argv)


def unknown_placeholders(argv: Sequence[str]) -> list[str]:
    """The `{name}`s of `argv` that are not placeholders (a typo such as `{task_id}`)."""
    return [m.group(0) for part in argv for m in PLACEHOLDER.finditer(part) if m.group(1) not in PLACEHOLDERS]


def one_line(text: str) -> str:
    """`text` as one bounded line: whitespace runs (newlines too) become one space, controls are shown as escapes
    (no NUL can reach an argument), cut at `MESSAGE_MAX` characters."""
    line = safe_line(" ".join(text.split()))
    return line if len(line) <= MESSAGE_MAX else line[:MESSAGE_MAX - 1] + "…"


class Notices:
    """Turns one session's journal events, in order, into notifications. Holds what that takes: the attempts' cost
    so far (for the budget), each task's last attempt (for a failure's message), the rate limits and the hold
    already told."""

    def __init__(self) -> None:
        self._spent = 0.0
        self._budget_told: float | None = None  # the budget whose exhaustion was told
        self._last_attempt: dict[str, str] = {}
        self._pauses_told: set[str] = set()
        self._held_told_at: float | None = None

    def notifications(self, event: OrchardEvent, *, budget_usd: float | None) -> list[Notification]:
        """What `event` tells (mostly nothing); `budget_usd` is the run's budget as it is now (`orchard set`)."""
        if isinstance(event, RunStarted):
            self._spent = event.cost_usd
            return []
        if isinstance(event, AttemptFinished):
            return self._attempt(event, budget_usd)
        if isinstance(event, TaskStatusChanged):
            return self._status(event)
        if isinstance(event, RunFinished):
            return self._finished(event)
        attention = _attention(event)
        if attention is None or (isinstance(event, RunHeld) and not self._hold_due(event.ts)):
            return []
        return [attention]

    def _attempt(self, event: AttemptFinished, budget_usd: float | None) -> list[Notification]:
        self._spent += event.cost_usd
        self._last_attempt[event.task] = event.message()
        out = []
        if event.outcome is Outcome.TAMPERED:
            out.append(_notice(NotifyEvent.NEEDS_ATTENTION, event, "tampered", f"task {event.task}: "
                               f"{event.message()}; check your repository's git directory"))
        if budget_usd is not None and self._spent >= budget_usd and self._budget_told != budget_usd:
            self._budget_told = budget_usd
            out.append(_notice(NotifyEvent.BUDGET_EXHAUSTED, event, RunStatus.BUDGET_EXHAUSTED.value,
                               f"run {event.run_id}: its budget of ${budget_usd:.2f} is spent (${self._spent:.2f}):"
                               " no new attempt starts; those running finish", run_level=True,
                               extra={"budget_usd": budget_usd, "cost_usd": round(self._spent, 6)}))
        return out

    def _status(self, event: TaskStatusChanged) -> list[Notification]:
        if event.status in (TaskStatus.FAILED, TaskStatus.CONFLICT):
            said = f"task {event.task} {event.status.value}" + (f": {event.reason}" if event.reason else "")
            last = self._last_attempt.get(event.task)
            return [_notice(NotifyEvent.TASK_FAILED, event, event.status.value,
                            said + (f"; {last}" if last and last != event.reason else ""))]
        if event.status is TaskStatus.PAUSED and event.reason not in self._pauses_told:
            self._pauses_told.add(event.reason)
            return [_notice(NotifyEvent.PAUSED, event, event.status.value, f"task {event.task} paused: "
                            f"{event.reason or 'its agent is rate limited'}", extra={"until": event.until})]
        return []

    def _finished(self, event: RunFinished) -> list[Notification]:
        figures = {name: event.summary[name] for name in FIGURES if name in event.summary}
        said = (f"run {event.run_id} {event.status.value}: {figures.get('merged', 0)} of {figures.get('tasks', 0)} "
                f"merged, {figures.get('failed', 0)} failed, {figures.get('blocked', 0)} blocked, "
                f"${float(figures.get('cost_usd', 0.0)):.2f}, {float(figures.get('wall_s', 0.0)):.1f} s")
        out = [_notice(NotifyEvent.RUN_FINISHED, event, event.status.value, said, extra=figures)]
        if event.status is RunStatus.BUDGET_EXHAUSTED and self._budget_told is None:
            out.append(_notice(NotifyEvent.BUDGET_EXHAUSTED, event, event.status.value,
                               f"run {event.run_id} ended: its budget is spent", extra=figures))
        return out

    def _hold_due(self, ts: float) -> bool:
        if self._held_told_at is not None and ts - self._held_told_at < HOLD_QUIET_S:
            return False
        self._held_told_at = ts
        return True


def _attention(event: OrchardEvent) -> Notification | None:
    """The `needs_attention` notification of a note, a preflight, a task's warning or a hold, if it is one."""
    kind = NotifyEvent.NEEDS_ATTENTION
    if isinstance(event, RunNote) and event.attention:
        return _notice(kind, event, "note", f"run {event.run_id}: {event.text}")
    if isinstance(event, PreflightChecked) and event.outcome in ("red", "cannot_start"):
        return _notice(kind, event, "preflight", f"run {event.run_id}: {event.message()}")
    if isinstance(event, TaskWarning):
        return _notice(kind, event, "task_warning", f"task {event.task}: {event.text}")
    if isinstance(event, RunHeld) and event.reason:
        return _notice(kind, event, "held", f"run {event.run_id}: new attempts wait: {event.reason}")
    return None


def _notice(kind: NotifyEvent, event: OrchardEvent, status: str, message: str, *, run_level: bool = False,
            extra: Mapping[str, Any] | None = None) -> Notification:
    """A notification of `event` (of its task, unless `run_level`). Every message starts with orchard's own words
    ("run …", "task …"), so no filled-in argument can start with `-` and pass for an option."""
    return Notification(kind=kind, run=event.run_id, task=None if run_level else event.task_id, status=status,
                        message=one_line(message), ts=iso(event.ts) or "", extra=MappingProxyType(dict(extra or {})))


# ---- webhook URLs: what of them is secret ------------------------------------------------------------------------

@dataclass(frozen=True)
class WebhookUrl:
    """A URL's parts as orchard treats them: the origin (scheme and host) is shown; the user part and everything
    after the host (path, query: where services put their tokens) are secret."""

    scheme: str
    host: str
    user: str
    rest: str

    @staticmethod
    def parse(url: str) -> WebhookUrl | None:
        match = _URL.match(url)
        if match is None:
            return None
        return WebhookUrl(match["scheme"].lower(), match["host"], match["user"] or "", match["rest"])

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def secret(self) -> bool:
        """It holds anything beyond its origin."""
        return bool(self.user) or self.rest not in ("", "/")


def shown_url(url: str) -> str:
    """A webhook as logs and notes show it: its origin only."""
    parsed = WebhookUrl.parse(url)
    return parsed.origin if parsed else "<webhook>"


def hidden_url(url: str, name: str) -> str:
    """A webhook as the plan's snapshot keeps it (`core.serialize`): its origin and `[REDACTED:<name>]` for the rest,
    or as it is when nothing in it is secret."""
    parsed = WebhookUrl.parse(url)
    if parsed is None:
        return f"[REDACTED:{name}]"
    return f"{parsed.origin}/[REDACTED:{name}]" if parsed.secret else url


def webhook_secrets(webhooks: Sequence[str | None]) -> dict[str, str]:
    """The secret parts of each webhook (its user part, and what follows its host), by a name for the redactor
    (`notify[1].webhook` …, counted from 1 as the plan's errors are)."""
    out: dict[str, str] = {}
    for number, url in enumerate(webhooks, start=1):
        parsed = WebhookUrl.parse(url) if url else None
        if parsed is None:
            continue
        if parsed.user:
            out[f"notify[{number}].webhook-user"] = parsed.user
        if parsed.rest not in ("", "/"):
            out[f"notify[{number}].webhook"] = parsed.rest
    return out
