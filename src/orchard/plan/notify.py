"""The `notify:` list of a plan: who is told of the run's failures and its end, and how. Each entry is checked on its
own and every problem names it: `notify[2].on: unknown event 'task_fail' (did you mean 'task_failed'?)` (entries
are counted from 1)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from orchard.core.model import DEFAULT_NOTIFY_RETRIES, DEFAULT_NOTIFY_TIMEOUT_S, Notify, NotifyEvent
from orchard.core.notify import PLACEHOLDERS, WebhookUrl, unknown_placeholders
from orchard.plan import fields as f
from orchard.plan.raw import INVALID, Problems

NOTIFY_KEYS = ("on", "command", "webhook", "desktop", "timeout", "retries")
CHANNELS = ("command", "webhook", "desktop")
MAX_NOTIFY_RETRIES = 10
EVENT_NAMES = tuple(e.value for e in NotifyEvent)


def events(value: Any) -> tuple[NotifyEvent, ...]:
    """`on`: an event's name, a list of them, or `all`."""
    if value == "all":
        return tuple(NotifyEvent)
    names = f.string_list(value)
    if not names:
        raise f.FieldError(f"name at least one event: {', '.join(EVENT_NAMES)} (or all)")
    for name in names:
        if name not in EVENT_NAMES:
            guess = f.did_you_mean(name, EVENT_NAMES)
            raise f.FieldError(f"unknown event {f.show(name)}" + (f" (did you mean '{guess}'?)" if guess else
                                                                  f" (events: {', '.join(EVENT_NAMES)}, or all)"))
    return tuple(NotifyEvent(name) for name in names)


def command(value: Any) -> tuple[str, ...]:
    """`command`: argv (a list, or a string split like a shell would; no shell runs it) with placeholders."""
    argv = f.argv(value)
    unknown = unknown_placeholders(argv)
    if unknown:
        raise f.FieldError(f"unknown placeholder {unknown[0]} (placeholders: "
                           f"{', '.join('{' + name + '}' for name in PLACEHOLDERS)})")
    return argv


def webhook(value: Any) -> str:
    """`webhook`: an http:// or https:// URL with a host. The URL is never shown in a message: it may hold a
    token."""
    url = f.string(value)
    parsed = WebhookUrl.parse(url)
    if parsed is None or parsed.scheme not in ("http", "https"):
        scheme = f" (it starts {f.show(parsed.scheme + '://')})" if parsed else ""
        raise f.FieldError(f"expected an http:// or https:// URL{scheme}")
    if not parsed.host or not url.isprintable() or any(c.isspace() for c in url):
        raise f.FieldError("expected an http:// or https:// URL with a host, without spaces or control characters")
    return url


def retries(value: Any) -> int:
    count: int = f.integer(value, minimum=0)
    if count > MAX_NOTIFY_RETRIES:
        raise f.FieldError(f"must be at most {MAX_NOTIFY_RETRIES}, got {count}")
    return count


_COERCERS: Mapping[str, Any] = {"on": events, "command": command, "webhook": webhook, "desktop": f.boolean,
                                "timeout": partial(f.duration, positive=True), "retries": retries}


def read_notify(value: Any, file: str, problems: Problems) -> tuple[Notify, ...]:
    """The valid entries of `notify:`; each bad one is reported (and left out)."""
    if not isinstance(value, list | tuple):
        problems.add(file, f"expected a list of entries such as {{on: [run_finished], webhook: URL}}, got "
                           f"{f.describe(value)}", field="notify")
        return ()
    entries = [_entry(item, file, problems, f"notify[{number}]") for number, item in enumerate(value, start=1)]
    return tuple(entry for entry in entries if entry is not None)


def _entry(value: Any, file: str, problems: Problems, where: str) -> Notify | None:
    """One entry, or None after reporting what is wrong with it."""
    if not isinstance(value, Mapping):
        problems.add(file, f"expected a mapping with 'on' and one of {', '.join(CHANNELS)}, got "
                           f"{f.describe(value)}", field=where)
        return None
    # YAML 1.1 reads a bare `on` key as true: it is the `on` of the entry all the same
    entry = {("on" if key is True else key): item for key, item in value.items()}
    before = len(problems.items)
    problems.check_keys(entry, NOTIFY_KEYS, file, prefix=f"{where}.")
    found = {key: problems.coerce(coercer, entry[key], file, field=f"{where}.{key}")
             for key, coercer in _COERCERS.items() if entry.get(key) is not None}
    if "on" not in entry:
        problems.add(file, f"'on' is missing: the events to tell ({', '.join(EVENT_NAMES)}, or all)", field=where)
    given = [name for name in CHANNELS if entry.get(name) not in (None, False)]
    if len(given) != 1:
        said = "none" if not given else " and ".join(given)
        problems.add(file, f"give exactly one of command, webhook or desktop: true (got {said})", field=where)
    if len(problems.items) > before or INVALID in found.values():
        return None
    return Notify(events=found["on"], command=found.get("command"), webhook=found.get("webhook"),
                  desktop=bool(found.get("desktop", False)),
                  timeout_s=found.get("timeout", DEFAULT_NOTIFY_TIMEOUT_S),
                  retries=found.get("retries", DEFAULT_NOTIFY_RETRIES))
