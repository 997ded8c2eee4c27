"""Reading agents' error texts: is it a rate limit (and until when), an auth failure, an API error?

Shared by every vendor adapter, so the same message means the same outcome whichever CLI printed it.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

from orchard.core.model import Outcome

_RATE = re.compile(r"rate[ _-]?limit|usage limit|hit your limit|quota|too many requests|\b429\b|resource_exhausted",
                   re.IGNORECASE)
_AUTH = re.compile(r"invalid api key|authentication|unauthori[sz]ed|\b401\b|\b403\b|please run /login|api key not"
                   r"|permission denied.*api|invalid_api_key|not logged in", re.IGNORECASE)
_EPOCH = re.compile(r"\|(\d{10})\b")  # Claude: "Claude AI usage limit reached|1755806400"
_IN = re.compile(r"(?:try again|retry|resets?|available again)[^0-9]{0,20}(?:in|after)\s+"
                 r"((?:\d+(?:\.\d+)?\s*[a-z]+[\s,]*(?:and\s+)?)+)", re.IGNORECASE)
_AT = re.compile(r"(?:try again|retry|resets?|available again)[^0-9]{0,20}at\s+(\d{1,2})(?::(\d{2}))?\s*([AP]\.?M\.?)?",
                 re.IGNORECASE)
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(second|sec|s|minute|min|m|hour|hr|h|day|d)[a-z]*", re.IGNORECASE)
_UNIT = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hr": 3600, "hour": 3600,
         "d": 86400, "day": 86400}


def reset_time(text: str, now: float | None = None) -> float | None:
    """When a rate limit resets, if the message says (epoch after `|`, or "try again in 4 days 20 hours")."""
    now = time.time() if now is None else now
    if match := _EPOCH.search(text):
        return float(match.group(1))
    if match := _IN.search(text):
        seconds = sum(float(n) * _UNIT[unit.lower()] for n, unit in _PART.findall(match.group(1)))
        return now + seconds if seconds else None
    if match := _AT.search(text):
        return _next_clock_time(int(match.group(1)), int(match.group(2) or 0), match.group(3), now)
    return None


def _next_clock_time(hour: int, minute: int, meridiem: str | None, now: float) -> float | None:
    """The next local time `hour:minute` (12-hour with AM/PM, else 24-hour) after `now`."""
    if meridiem:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if meridiem.upper().startswith("P") else 0)
    if hour > 23 or minute > 59:
        return None
    current = datetime.fromtimestamp(now)
    target = current.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= current:
        target += timedelta(days=1)
    return target.timestamp()


def classify_error(text: str, status: int | None = None) -> Outcome:
    """The outcome an agent's reported error means."""
    if status == 429 or (status is None and _RATE.search(text)):
        return Outcome.RATE_LIMITED
    if status in (401, 403) or (status is None and _AUTH.search(text)):
        return Outcome.AUTH
    if status is not None and status >= 400:
        return Outcome.API_ERROR
    return Outcome.AGENT_ERROR


def resume_at(outcome: Outcome, text: str) -> float | None:
    """For a rate limit, when to try again if the message says; None otherwise."""
    return reset_time(text) if outcome is Outcome.RATE_LIMITED else None
