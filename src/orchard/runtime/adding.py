"""`orchard add` from inside a running attempt: the agent's request reaches the session through the attempt's
outbox (`runtime.outbox`), never through the store, which its sandbox keeps read-only.

`orchard add` run by an agent writes `<outbox>/<name>.add.json` and waits for `<name>.result.json`. The session
looks in the outboxes of its running attempts with its other requests (every `REQUEST_POLL_S`), takes each file
(renamed `.taken`, read as untrusted input: a regular file, bounded in size), records it as a journaled request
naming the task as the parent, checks it with the plan's own rules and answers in the result file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchard.core.journal import RunJournal
from orchard.runtime.layout import Layout
from orchard.runtime.outbox import read_untrusted

REQUEST_SUFFIX = ".add.json"
RESULT_SUFFIX = ".result.json"
REQUESTS_PER_LOOK = 20  # per outbox and look: an agent writing thousands of files is answered a few at a time
REQUEST_LIMIT = 1024 * 1024  # bytes of one request read; a longer one is cut, so refused as invalid JSON
MAX_DEPTH_WALK = 1000  # a parent chain longer than this is a loop in the records, not a real chain


@dataclass(frozen=True)
class OutboxRequest:
    """One request an agent left: from which task, where to answer, and its document (or why it is unreadable)."""

    task_id: str
    reply: Path
    document: Any = None
    problem: str = ""


def take_outbox_requests(layout: Layout, run_id: str, running: Iterable[tuple[str, int]]) -> list[OutboxRequest]:
    """The requests in the outboxes of the running attempts (task, attempt number), each taken once."""
    found = []
    for task_id, number in running:
        outbox = layout.outbox(run_id, task_id, number)
        if not outbox.is_dir() or outbox.is_symlink():
            continue
        for path in sorted(outbox.glob("*" + REQUEST_SUFFIX))[:REQUESTS_PER_LOOK]:
            found.append(_take(task_id, outbox, path))
    return found


def _take(task_id: str, outbox: Path, path: Path) -> OutboxRequest:
    reply = outbox / (path.name.removesuffix(REQUEST_SUFFIX) + RESULT_SUFFIX)
    text = read_untrusted(path, REQUEST_LIMIT)
    try:
        os.replace(path, path.with_name(path.name + ".taken"))  # never taken twice
    except OSError:
        return OutboxRequest(task_id, reply, problem="the request file could not be taken")
    if text is None:
        return OutboxRequest(task_id, reply, problem="the request is not a regular file")
    try:
        return OutboxRequest(task_id, reply, document=json.loads(text))
    except ValueError as exc:
        return OutboxRequest(task_id, reply, problem=f"the request is not JSON ({exc})")


def request_data(request: OutboxRequest) -> str:
    """The journaled request of an agent's `orchard add`: its tasks, the asking task as their parent, and where the
    session answers (a path the session chose, not the agent)."""
    doc = request.document if isinstance(request.document, dict) else {}
    name = str(doc.get("file") or "orchard add")[:200]
    return json.dumps({"tasks": doc.get("tasks"), "parent": request.task_id, "reply": str(request.reply),
                       "file": f"{name} (orchard add by task {request.task_id})"})


def answer(reply: str | Path | None, *, ok: bool, result: str) -> None:
    """Tell the waiting `orchard add` what became of its request (written whole: a reader never sees half)."""
    if not reply:
        return
    path = Path(reply)
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(json.dumps({"ok": ok, "result": result}), encoding="utf-8")
        os.replace(partial, path)
    except OSError:  # the attempt ended and its outbox went with a new attempt: nobody waits any more
        pass


def depth_of(journal: RunJournal, task_id: str | None) -> int:
    """How many `orchard add` steps a task is away from the plan's own tasks (0 for those, and for none)."""
    depth = 0
    while task_id is not None and depth < MAX_DEPTH_WALK:
        parent = journal.task(task_id).parent
        if parent is None:
            return depth
        depth, task_id = depth + 1, parent
    return depth
