"""The one line of a failure's output that says what went wrong: what the end screen shows under each task that did
not merge (a verify's first failing assertion, an exception, a git conflict, an agent's error). Pure: text in, one
line out."""

from __future__ import annotations

import re

LINE_MAX = 160

# Colours a verify command may print (`pytest --color=yes`): matched and shown without them.
_SGR = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# What a line says, best first; the first line of the best kind found wins. Each pattern's `msg` group, when it
# matched, is what is shown (pytest's `E   ` prefix is not the error).
_KINDS = (
    # pytest's short summary: the test and its assertion in one line (`ERROR` for collection errors)
    re.compile(r"^(?:FAILED|ERROR) [\w./\\-]+(?:::\S+)?(?: - .+)?$"),
    # pytest's explanation of a failed assertion
    re.compile(r"^E {2,}(?P<msg>\S.*)$"),
    # an exception as a traceback ends (unindented: `raise ValueError(...)` quoted from the source is not one)
    re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Failure|Exit|Interrupt|Fault)(?::.*)?$"),
    # git's own words for a conflict
    re.compile(r"^CONFLICT \(.*$"),
    # any tool's: `error: …`, `fatal: …`, `FAIL src/sum.test.js`, `x.py:3: error: …`, `thread 'main' panicked at`
    re.compile(r"(?i)(?:^|[\s:(\[])(?:error|errors|fatal|fail|failed|failure|panicked|err!)(?:$|[\s:\[\]()!,;])"),
)
_NO_ERROR = re.compile(r"(?i)\b(?:0|no) (?:errors?|failed|failures?)\b")  # "found 0 errors" says all is well
_NOISE = re.compile(
    r"^(?:Traceback \(most recent call last\):|During handling of the above exception.*"
    r"|The above exception was the direct cause.*|[=_~*#+-]{3,}.*|.*[=_~*#+-]{3,}|[\s^~]*)$"
)


def first_error_line(text: str) -> str:
    """The most telling line of `text` (stripped, cut at `LINE_MAX` characters): the first of the best kind in
    `_KINDS`, else its first line that is not decoration; "" for text with nothing in it."""
    lines = [_SGR.sub("", line).rstrip() for line in text.splitlines()]
    best: tuple[int, str] | None = None
    for line in lines:
        kind, shown = _kind(line)
        if kind is not None and (best is None or kind < best[0]):
            best = (kind, shown)
            if kind == 0:
                break
    if best is None:
        best = (len(_KINDS), next((line.strip() for line in lines if not _NOISE.match(line.strip())), ""))
    return _cut(best[1])


def _kind(line: str) -> tuple[int | None, str]:
    """Which of `_KINDS` the line is (None: none), and the part of it to show."""
    if not line.strip() or _NO_ERROR.search(line):
        return None, ""
    for kind, pattern in enumerate(_KINDS):
        match = pattern.search(line)
        if match:
            return kind, (match.groupdict().get("msg") or line).strip()
    return None, ""


def _cut(line: str) -> str:
    return line if len(line) <= LINE_MAX else line[:LINE_MAX - 1] + "…"


def without_prefix(line: str, prefix: str) -> str:
    """`line` without a leading `prefix: ` (an outcome the screen shows beside it already)."""
    head = f"{prefix}: "
    return line[len(head):] if prefix and line.startswith(head) else line
