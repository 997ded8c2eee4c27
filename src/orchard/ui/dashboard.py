"""The live terminal dashboard (rich): a row per active or recent task and a queue line.

Agent-derived text goes in as rich `Text` (never parsed as markup) and through `safe_line` (its escape sequences
shown, not obeyed)."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchard.core.durations import format_duration
from orchard.core.events import OrchardEvent
from orchard.core.model import TaskStatus
from orchard.core.safe_text import safe_line
from orchard.ui.snapshot import Snapshot

S = TaskStatus
STYLE = {
    S.RUNNING: "cyan", S.VERIFYING: "magenta", S.MERGING: "blue", S.MERGED: "green", S.FAILED: "red",
    S.CONFLICT: "red", S.BLOCKED: "yellow", S.CANCELLED: "dim", S.PAUSED: "yellow", S.QUEUED: "white",
    S.PENDING: "dim",
}


def render(snap: Snapshot, now: float | None = None) -> RenderableType:
    """The whole dashboard for one snapshot (pure: same snapshot and time, same picture)."""
    now = now or time.time()
    table = Table(expand=True, box=None, header_style="bold", pad_edge=False)
    for name, kwargs in (("task", {"ratio": 2}), ("status", {}), ("agent", {}), ("try", {"justify": "right"}),
                         ("elapsed", {"justify": "right"}), ("activity", {"ratio": 5}),
                         ("cost", {"justify": "right"})):
        table.add_column(name, no_wrap=True, overflow="ellipsis", **kwargs)
    for view in snap.rows():
        end = view.finished_at or now
        elapsed = format_duration(end - view.attempt_started) if view.attempt_started else ""
        cost = f"${view.cost_usd:.2f}" if view.cost_usd else ""
        # Text, not str: agent output in the activity column must never be read as rich markup.
        table.add_row(Text(safe_line(view.id)), Text(view.status, style=STYLE.get(view.status, "")),
                      Text(safe_line(view.agent)), str(view.attempt or ""), elapsed,
                      Text(safe_line(view.shown_activity())), cost)
    running = snap.count(lambda s: s in (S.RUNNING, S.VERIFYING))
    waiting = snap.total - len(snap.tasks) + snap.count(lambda s: s.waiting)
    free = max(0, snap.parallel - running)
    failed = snap.count(lambda s: s.failed)
    queue = Text.assemble(
        ("orchard ", "bold"), (safe_line(snap.run_id), "dim"),
        f"  waiting {waiting} | running {running} | free {free}",
        f"  ·  merged {snap.count(lambda s: s is S.MERGED)}/{snap.total}",
        (f"  failed {failed}", "red") if failed else "",
        f"  ·  {format_duration(now - snap.started)}",
        f"  ·  ${snap.cost():.2f}" if snap.cost() else "",
        (f"  ·  {snap.held}", "yellow") if snap.held else "",
    )
    parts: list[RenderableType] = [queue, *_gate_line(snap, now), table]
    parts.extend(Text(safe_line(note), style="yellow") for note in snap.notes)
    return Group(*parts)


def _gate_line(snap: Snapshot, now: float) -> list[Text]:
    """The merge gate next to the queue line: the candidate in its check and for how long, and the figures."""
    gate = snap.gate
    if gate is None:
        return []
    checking = (f"checking {len(gate.checking)} result{'s' if len(gate.checking) != 1 else ''} "
                f"({format_duration(now - gate.since)})" if gate.checking else "idle")
    return [Text.assemble(("gate ", "bold"), checking, f"  ·  checks {gate.checks}",
                          (f"  failed {gate.failed}", "red") if gate.failed else "",
                          f"  ·  bisections {gate.bisections}" if gate.bisections else "")]


class Dashboard:
    """An observer that keeps a snapshot and redraws it live while the run lasts."""

    def __init__(self, console: Console) -> None:
        self.snapshot = Snapshot()
        self.console = console
        self.live = Live(console=console, refresh_per_second=4, transient=False,
                         get_renderable=lambda: render(self.snapshot))

    def __call__(self, event: OrchardEvent) -> None:
        self.snapshot.apply(event)

    def __enter__(self) -> Dashboard:
        self.live.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.live.refresh()
        self.live.stop()
