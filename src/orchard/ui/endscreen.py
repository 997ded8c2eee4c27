"""The end screen of `orchard run`, `resume` and `retry`: the summary, then what to do next. Each task that did not
merge gets one line saying why (a verify's failing assertion, the agent's error, the conflicting paths, the task
that blocked it) and the commands to look at it; then the one `orchard retry` for them all, and landing: the whole
run when everything merged, else `land --partial`, which says it lands only what merged.

Stored text (task ids, errors, verify output) is shown through `core.safe_text`, as `Text`, never as markup."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from orchard.core.error_lines import first_error_line, without_prefix
from orchard.core.feedback import BASELINE_RED
from orchard.core.journal import Records
from orchard.core.landing import partial_hint, tasks_word
from orchard.core.model import RunStatus, TaskStatus
from orchard.core.records import RunRecord, TaskRecord
from orchard.core.safe_text import safe_line
from orchard.errors import OrchardError
from orchard.store import Store
from orchard.ui.dashboard import STYLE
from orchard.ui.report import summary_text

S = TaskStatus
SHOWN = 10  # tasks listed; the rest are counted (`orchard status` has them all)
_REASON = re.compile(r"^([a-z]+(?:_[a-z]+)*)(?::|$)")  # an error's leading outcome: `verify_failed: …`


@dataclass(frozen=True)
class Unmerged:
    """A task that ended without merging, and why in one line."""

    task: str
    status: TaskStatus
    reason: str  # the outcome that ended it (`verify_failed`, `agent_error`, `integration_failed`), or ""
    why: str
    blocked_by: tuple[str, ...] = ()


def unmerged_tasks(records: Records, run_id: str) -> list[Unmerged]:
    """The run's tasks that failed, conflicted, were blocked or cancelled: own failures first, in plan order."""
    tasks = records.tasks(run_id)
    statuses = {t.task_id: t.status for t in tasks}
    depends_on = _dependencies(records, run_id)
    ended = [t for t in tasks if t.status.failed or t.status is S.CANCELLED]
    ended.sort(key=lambda t: (t.status is S.BLOCKED, t.status is S.CANCELLED))
    out = []
    for t in ended:
        blockers = tuple(d for d in depends_on.get(t.task_id, ()) if statuses.get(d) is not S.MERGED)
        out.append(_unmerged(records, t, blockers if t.status is S.BLOCKED else ()))
    return out


def _dependencies(records: Records, run_id: str) -> dict[str, tuple[str, ...]]:
    """Each task's dependencies, from the run's plan (none when the plan cannot be read: the screen goes on)."""
    try:
        plan = records.plan(run_id)
    except OrchardError:
        return {}
    return {t.id: tuple(t.depends_on) for t in plan.tasks}


def _unmerged(records: Records, task: TaskRecord, blockers: tuple[str, ...]) -> Unmerged:
    found = _REASON.match(task.error)
    reason = found.group(1) if found else ""
    if task.status is S.BLOCKED:
        said = first_error_line(task.error)
        why = f"blocked by {', '.join(blockers)}" if blockers else f"blocked: {said}" if said else "blocked"
    elif task.status is S.CONFLICT and task.conflicts:
        why = f"conflicts with work merged meanwhile, on {task.conflicts}"
    elif reason == "verify_failed":
        why = first_error_line(_verify_output(records, task)) or without_prefix(first_error_line(task.error), reason)
        why += " (the verify fails on the base too)" if BASELINE_RED in task.error else ""
    else:
        why = without_prefix(first_error_line(task.error), reason) or task.status.value
    return Unmerged(task.task_id, task.status, reason, why, blockers)


def _verify_output(records: Records, task: TaskRecord) -> str:
    """The end of the output of the task's latest failed verify (`verify.finished` keeps it)."""
    tails = [data.get("tail", "") for _, data in records.events(task.run_id, task_id=task.task_id)
             if data.get("type") == "verify.finished" and not data.get("passed")]
    return str(tails[-1]) if tails else ""


def final_screen(state_db: Path, summary: dict[str, Any], *, landed: str = "") -> RenderableType:
    """The end screen of the run `summary` is of, read from its store (`state_db`); the summary alone when the
    store cannot be read (the run itself is over and recorded)."""
    try:
        store = Store(state_db)
    except OrchardError:
        return summary_text(summary)
    try:
        run = store.run(summary["run_id"])
        latest = store.run().id == run.id
        return end_screen(summary, run, unmerged_tasks(store, run.id), latest=latest, landed=landed)
    except OrchardError:
        return summary_text(summary)
    finally:
        store.close()


def end_screen(summary: dict[str, Any], run: RunRecord, unmerged: Sequence[Unmerged], *, latest: bool,
               landed: str = "") -> RenderableType:
    """The summary and the next steps for a run that ended (`latest`: the one the commands find without `--run`;
    `landed`: what `--land` did, "landed <branch> on <base>: fast-forward", "" when it did not land)."""
    status = RunStatus(summary["status"])
    parts: list[RenderableType] = [summary_text(summary)]
    if status is RunStatus.CANCELLED:
        return Group(*parts)
    listed = [u for u in unmerged if status is not RunStatus.INTERRUPTED or u.status is not S.CANCELLED]
    if listed:
        parts.extend(_listing(listed, run.id, latest=latest))
    parts.extend(_next_steps(summary, run, listed, latest=latest, landed=landed))
    return Group(*parts)


def _listing(unmerged: Sequence[Unmerged], run_id: str, *, latest: bool) -> list[Text]:
    """Each task that did not merge: its status and reason, why, and the commands that look at it."""
    lines = [Text(""), Text("did not merge:", style="bold")]
    for u in unmerged[:SHOWN]:
        if u.status is S.BLOCKED:  # nothing of its own to look at: it goes again with what blocked it
            lines.append(Text.assemble("  ", (safe_line(u.task), "bold"), "  ",
                                       (safe_line(u.why), STYLE.get(u.status, ""))))
            continue
        head = Text.assemble("  ", (safe_line(u.task), "bold"), "  ", (u.status.value, STYLE.get(u.status, "")))
        if u.reason and u.reason != u.status.value:
            head.append(f" · {u.reason}")
        lines.append(head)
        lines.append(Text(f"      {safe_line(u.why)}"))
        look = [_command(f"orchard logs {u.task}", run_id, latest), _command(f"orchard show {u.task}", run_id, latest)]
        lines.append(Text("      " + "   ".join(safe_line(c) for c in look), style="cyan"))
    if len(unmerged) > SHOWN:
        lines.append(Text(f"  … and {len(unmerged) - SHOWN} more: {_command('orchard status', run_id, latest, '')}"))
    return lines


def _next_steps(summary: dict[str, Any], run: RunRecord, unmerged: Sequence[Unmerged], *, latest: bool,
                landed: str) -> list[Text]:
    status, merged, total = RunStatus(summary["status"]), summary["merged"], summary["tasks"]
    branch = safe_line(run.integration_branch)
    if status is RunStatus.COMPLETED:
        if landed:
            return [Text(safe_line(landed), style="green")]
        return [Text(f"results on branch {branch}; land with: orchard land {run.id}")]
    lines = [Text("")]
    again = [u.task for u in unmerged if u.status in (S.FAILED, S.CONFLICT)]
    if again:
        blocked = " (the tasks they blocked go again with them)" if any(u.blocked_by for u in unmerged) else ""
        retry = _command(f"orchard retry {' '.join(again)}", run.id, latest)
        lines.append(Text.assemble("try again: ", (safe_line(retry), "cyan"), blocked))
    if status is RunStatus.INTERRUPTED:
        lines.append(Text.assemble("resume with: ", (f"orchard resume {run.id}", "cyan")))
        return lines
    missing = total - merged
    if merged:
        lines.append(Text(f"{tasks_word(missing)} did not merge; {partial_hint(run.id, merged)}"))
    else:
        lines.append(Text(f"{tasks_word(missing)} did not merge; nothing merged, so there is nothing to land"))
    return lines


def _command(command: str, run_id: str, latest: bool, option: str = "--run ") -> str:
    """`command` as it finds this run: as it is when the run is the latest, else with `--run RUN` (or `RUN`)."""
    return command if latest else f"{command} {option}{run_id}"
