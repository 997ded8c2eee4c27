"""`orchard add TASKFILE... [--run RUN]`: tasks added to a live or interrupted run.

Run by a user, it checks the tasks against the run's plan (`plan.extend`) and records a request the run's session
takes within a second (a run no session holds takes it when it resumes). Run by an agent inside its attempt (it
finds `ORCHARD_OUTBOX`), it cannot write the store: it leaves the request in the attempt's outbox and waits for the
session's answer (`runtime.adding`); the new tasks' parent is the agent's task.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click

from orchard.cli.common import stdout_console
from orchard.cli.control_cmds import _open, _said, run_option
from orchard.cli.inspect_cmds import open_store
from orchard.core.steering import ADD_TASKS
from orchard.errors import NoAnswer, UsageError
from orchard.plan.extend import add_tasks, read_task_files
from orchard.runtime.adding import REQUEST_SUFFIX, RESULT_SUFFIX

ANSWER_TIMEOUT_S = 60.0  # how long an agent's `orchard add` waits for the session's answer
ANSWER_POLL_S = 0.1


@click.command("add")
@click.argument("files", metavar="TASKFILE...", nargs=-1, required=True)
@run_option
@click.pass_context
def add_cmd(ctx: click.Context, files: tuple[str, ...], run_id: str | None) -> int:
    """Add tasks to a live or interrupted run: each TASKFILE (YAML or JSON; `-` for stdin) is a list of tasks, or
    a mapping with a `tasks:` list, in the plan's task format. Inside an attempt, the new tasks are its children."""
    entries, label = read_task_files(files, sys.stdin.read)
    outbox = os.environ.get("ORCHARD_OUTBOX")
    inside = outbox and os.environ.get("ORCHARD_TASK_ID") and run_id in (None, os.environ.get("ORCHARD_RUN_ID"))
    if inside and outbox:
        return _ask_session(Path(outbox), entries, label)
    layout, store = open_store(ctx)
    try:
        journal = _open(store, run_id)
        addition = add_tasks(journal.plan, entries, file=label)  # what the session will do, checked now
        request = journal.control_requested(ADD_TASKS, json.dumps({"tasks": entries, "parent": None,
                                                                   "file": label}),
                                            detail=f"add {', '.join(addition.added) or 'no new task'}")
        _said(layout, journal, request, f"add {', '.join(addition.added) or 'nothing new'}")
    finally:
        store.close()
    return 0


def _ask_session(outbox: Path, entries: list[Any], label: str) -> int:
    """From inside an attempt: leave the request in the outbox and wait for the session's answer."""
    name = uuid.uuid4().hex
    partial = outbox / f"{name}.partial"
    partial.write_text(json.dumps({"tasks": entries, "file": label}), encoding="utf-8")
    os.replace(partial, outbox / (name + REQUEST_SUFFIX))  # whole, or not there
    reply = outbox / (name + RESULT_SUFFIX)
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while not reply.exists():
        if time.monotonic() > deadline:
            raise NoAnswer(f"the run did not answer the request in {ANSWER_TIMEOUT_S:.0f}s (is it still running?)")
        time.sleep(ANSWER_POLL_S)
    answer = json.loads(reply.read_text(encoding="utf-8"))
    if not answer.get("ok"):
        raise UsageError(f"orchard add: {answer.get('result')}")
    stdout_console().print(f"orchard add: {answer.get('result')}")
    return 0
