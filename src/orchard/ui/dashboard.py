"""The live terminal dashboard (rich): the queue line, a row per task of the run, the latest notes.

The picture is made for the terminal it is drawn on: the queue line drops or shortens its parts (never the elapsed
time) to fit the width, narrow terminals lose the agent and cost columns, and a group of rows the height cannot
hold ends in a count line ("… 12 more waiting"); tasks that need the user come before those that went well.

Agent-derived text goes in as rich `Text` (never parsed as markup) and through `safe_line` (its escape sequences
shown, not obeyed)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from orchard.core.durations import format_duration
from orchard.core.events import OrchardEvent
from orchard.core.model import RunStatus, TaskStatus
from orchard.core.safe_text import safe_line
from orchard.ui.snapshot import Snapshot, TaskView

S = TaskStatus
STYLE = {
    S.RUNNING: "cyan", S.VERIFYING: "magenta", S.MERGING: "blue", S.MERGED: "green", S.FAILED: "red",
    S.CONFLICT: "red", S.BLOCKED: "yellow", S.CANCELLED: "dim", S.PAUSED: "yellow", S.QUEUED: "white",
    S.PENDING: "dim",
}
RUN_STYLE = {RunStatus.COMPLETED: "green", RunStatus.FAILED: "red"}
GAP = "  "
AGENT_MIN_WIDTH = 100  # narrower terminals drop the agent column, then (below 80) the cost, then (60) the try
COST_MIN_WIDTH = 80
TRY_MIN_WIDTH = 60
NOTES = 3


def render(snap: Snapshot, now: float | None = None) -> Frame:
    """The whole dashboard for one snapshot (pure: same snapshot, time and terminal size, same picture)."""
    return Frame(snap, now or time.time())


@dataclass(frozen=True)
class Frame:
    """One picture of the dashboard, laid out when rich draws it, for the width and height it is given."""

    snap: Snapshot
    now: float

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.lines(options.max_width, options.height or options.max_height)

    def lines(self, width: int, height: int) -> Iterator[Text]:
        snap = self.snap
        if not snap.run_id:  # no run yet: a session that fails before it starts leaves nothing on the screen
            return
        now = snap.ended or self.now  # a finished run's clocks stop at its end
        top = [*header(snap, now, width), *_gate_line(snap, now, width)]
        notes = [_one_line(Text(safe_line(note), style="yellow"), width) for note in snap.notes[-NOTES:]]
        columns = _columns(snap, width)
        budget = max(1, height - len(top) - len(notes) - 1)
        rows = _fit(snap.groups(), budget)
        yield from top
        yield from _table(columns, rows, now, width)
        yield from notes


# ---- the queue line ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Figures:
    run_id: str
    status: RunStatus
    waiting: int
    running: int
    free: int
    merged: int
    total: int
    failed: int
    blocked: int
    elapsed: str
    cost: float
    held: str
    eta: str  # "eta 3m20s" while the run should go on that long, else ""


def _figures(snap: Snapshot, now: float) -> _Figures:
    running = snap.count(lambda s: s in (S.RUNNING, S.VERIFYING))
    return _Figures(
        run_id=safe_line(snap.run_id), status=snap.status,
        waiting=max(0, snap.total - len(snap.tasks)) + snap.count(lambda s: s.waiting),
        running=running, free=max(0, snap.parallel - running), merged=snap.count(lambda s: s is S.MERGED),
        total=max(snap.total, len(snap.tasks)), failed=snap.count(lambda s: s.own_failure),
        blocked=snap.count(lambda s: s is S.BLOCKED), elapsed=format_duration(now - snap.started), cost=snap.cost(),
        held=safe_line(snap.held),
        eta=f"eta {format_duration(max(0.0, snap.eta - now))}" if snap.eta and snap.status is RunStatus.RUNNING else "")


@dataclass(frozen=True)
class _Form:
    """How much of the queue line to say: `orchard` and the run id in full, shortened or neither, the free slots,
    wide or tight separators, long or short words, the cost, and the hold reason inline (else on a line of its
    own)."""

    run_id: str = "full"  # full | short | none
    free: bool = True
    wide: bool = True
    short_words: bool = False
    cost: bool = True
    held: bool = False


# Richest first: the first that fits the width is drawn. The last puts the elapsed time first, so that even cut
# at a very narrow terminal the line keeps it.
_FORMS = (_Form(held=True), _Form(free=False, held=True), _Form(), _Form(free=False),
          _Form(run_id="short", free=False, wide=False), _Form(run_id="none", free=False, wide=False),
          _Form(run_id="none", free=False, wide=False, short_words=True),
          _Form(run_id="none", free=False, wide=False, short_words=True, cost=False))


def header(snap: Snapshot, now: float, width: int) -> list[Text]:
    """The queue line (and the hold reason's own line when it does not fit beside it), each at most `width`."""
    figures = _figures(snap, now)
    for form in _FORMS:
        if form.held and not figures.held:
            continue
        line = _queue_line(figures, form)
        if line.cell_len <= width:
            return [line, *_held_line(figures, width, inline=form.held)]
    return [_one_line(_last_resort(figures), width), *_held_line(figures, width, inline=False)]


def _queue_line(f: _Figures, form: _Form) -> Text:
    sep, gap = ("  ·  ", "  ") if form.wide else (" · ", " ")
    line = Text()
    if form.run_id != "none":
        line.append("orchard ", "bold").append(_short_id(f.run_id) if form.run_id == "short" else f.run_id, "dim")
        line.append(gap)
    line.append_text(_queue(f, form))
    line.append(sep).append_text(_tally(f, gap))
    line.append(sep + f.elapsed)
    if form.cost and f.eta:  # dropped with the cost, before anything that says how the run stands
        line.append(f"{sep}{f.eta}")
    if form.cost and f.cost:
        line.append(f"{sep}${f.cost:.2f}")
    if form.held and f.held:
        line.append(sep).append(f.held, "yellow")
    return line


def _queue(f: _Figures, form: _Form) -> Text:
    """Waiting and running tasks, free slots; once the session ended, how it ended instead."""
    if f.status is not RunStatus.RUNNING:
        return Text(f.status.value, style=RUN_STYLE.get(f.status, "yellow"))
    waiting, running = ("wait", "run") if form.short_words else ("waiting", "running")
    return Text(f"{waiting} {f.waiting} | {running} {f.running}" + (f" | free {f.free}" if form.free else ""))


def _tally(f: _Figures, gap: str) -> Text:
    return Text.assemble(f"merged {f.merged}/{f.total}", (f"{gap}failed {f.failed}", "red") if f.failed else "",
                         (f"{gap}blocked {f.blocked}", "yellow") if f.blocked else "")


def _last_resort(f: _Figures) -> Text:
    return Text.assemble(f.elapsed, " · ", _tally(f, " "), " · ",
                         _queue(f, _Form(run_id="none", free=False, wide=False, short_words=True)))


def _held_line(f: _Figures, width: int, *, inline: bool) -> list[Text]:
    return [] if inline or not f.held else [_one_line(Text(f.held, style="yellow"), width)]


def _short_id(run_id: str) -> str:
    """A run id without its date and time (`20261203-172714-8cbf3202d866` → `…8cbf3202d866`): its random part
    tells runs apart."""
    head, sep, tail = run_id.rpartition("-")
    return f"…{tail}" if sep and head and len(tail) >= 6 else run_id


def _gate_line(snap: Snapshot, now: float, width: int) -> list[Text]:
    """The merge gate under the queue line: the candidate in its check and for how long, and the figures."""
    gate = snap.gate
    if gate is None:
        return []
    checking = (f"checking {len(gate.checking)} result{'s' if len(gate.checking) != 1 else ''} "
                f"({format_duration(now - gate.since)})" if gate.checking else "idle")
    return [_one_line(Text.assemble(("gate ", "bold"), checking, f"  ·  checks {gate.checks}",
                                    (f"  failed {gate.failed}", "red") if gate.failed else "",
                                    f"  ·  bisections {gate.bisections}" if gate.bisections else ""), width)]


# ---- the rows ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _More:
    """The count line ending a group the screen cannot hold."""

    count: int
    what: str


def _fit(groups: list[tuple[str, list[TaskView]]], budget: int) -> list[TaskView | _More]:
    """The rows that fit in `budget` lines, group by group: each group later in the order keeps at least a count
    line, and a group cut short ends in one."""
    out: list[TaskView | _More] = []
    for i, (name, views) in enumerate(groups):
        if not views:
            continue
        room = budget - sum(1 for _, later in groups[i + 1:] if later)
        if len(views) <= room:
            out.extend(views)
            budget -= len(views)
            continue
        shown = max(0, room - 1)
        out.extend(views[:shown])
        out.append(_More(len(views) - shown, _what(name, views[shown:])))
        budget -= shown + 1
    return out


def _what(group: str, hidden: list[TaskView]) -> str:
    """What a count line calls the rows it stands for: `waiting`, `running`, or their statuses (`failed/blocked`)."""
    if group in ("active", "waiting"):
        return "running" if group == "active" else "waiting"
    return "/".join(dict.fromkeys(v.status.value for v in hidden))


@dataclass(frozen=True)
class _Column:
    name: str
    cell: Callable[[TaskView, float], Text]
    right: bool = False
    flexible: bool = False  # takes the width the others leave (the activity)


def _columns(snap: Snapshot, width: int) -> list[_Column]:
    """The columns this width affords: all on a wide terminal; the agent, then the cost (shown only once something
    cost money), then the try go as it narrows."""
    columns = [_Column("task", lambda v, _: Text(safe_line(v.id))),
               _Column("status", lambda v, _: Text(v.status.value, style=STYLE.get(v.status, "")))]
    if width >= AGENT_MIN_WIDTH:
        columns.append(_Column("agent", lambda v, _: Text(safe_line(v.agent))))
    if width >= TRY_MIN_WIDTH:
        columns.append(_Column("try", lambda v, _: Text(str(v.attempt or "")), right=True))
    columns.append(_Column("elapsed", _elapsed, right=True))
    # Text, not str: agent output in the activity column must never be read as rich markup.
    columns.append(_Column("activity", lambda v, _: Text(safe_line(v.shown_activity())), flexible=True))
    if width >= COST_MIN_WIDTH and snap.cost():
        columns.append(_Column("cost", lambda v, _: Text(f"${v.cost_usd:.2f}" if v.cost_usd else ""), right=True))
    return columns


def _elapsed(view: TaskView, now: float) -> Text:
    """The attempt's time; none for a task waiting (again, after an interrupted attempt: its clock is not going)."""
    if not view.attempt_started or view.status.waiting:
        return Text("")
    return Text(format_duration((view.finished_at or now) - view.attempt_started))


def _table(columns: list[_Column], rows: list[TaskView | _More], now: float, width: int) -> Iterator[Text]:
    """The column header and one line per row, columns as wide as their widest cell (the task's capped at a
    quarter of the width), the activity taking what is left."""
    cells = [[column.cell(row, now) for column in columns] if isinstance(row, TaskView) else None for row in rows]
    widths = [max([len(c.name), *(r[i].cell_len for r in cells if r is not None)]) for i, c in enumerate(columns)]
    task_cap = max(len("task"), width // 4)
    widths[0] = min(widths[0], task_cap)
    flexible = next(i for i, c in enumerate(columns) if c.flexible)
    fixed = sum(w for i, w in enumerate(widths) if i != flexible) + len(GAP) * (len(columns) - 1)
    widths[flexible] = max(len("activity"), width - fixed)
    yield _one_line(_row([Text(c.name, style="bold") for c in columns], columns, widths), width)
    for row, line in zip(rows, cells, strict=True):
        if line is None:
            assert isinstance(row, _More)
            yield _one_line(Text(f"… {row.count} more {row.what}", style="dim"), width)
        else:
            yield _one_line(_row(line, columns, widths), width)


def _row(cells: list[Text], columns: list[_Column], widths: list[int]) -> Text:
    line = Text()
    for i, (cell, column, cell_width) in enumerate(zip(cells, columns, widths, strict=True)):
        cell = cell.copy()
        if cell.cell_len > cell_width:
            cell.truncate(cell_width, overflow="ellipsis")
        pad = " " * (cell_width - cell.cell_len)
        if i:
            line.append(GAP)
        if column.right:
            line.append(pad).append_text(cell)
        elif i < len(columns) - 1:
            line.append_text(cell).append(pad)
        else:
            line.append_text(cell)
    line.rstrip()
    return line


def _one_line(text: Text, width: int) -> Text:
    """`text` as one line of at most `width` cells (cut with an ellipsis)."""
    text = text.copy()
    text.no_wrap, text.overflow = True, "ellipsis"
    text.truncate(width, overflow="ellipsis")
    return text


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
        # A session that ended by itself said so (`run.finished`); one an interrupt or an error cut short did not,
        # and its last frame must not show tasks still running with their clocks going: it shows the run stopped.
        self.snapshot.stopped(time.time())
        self.live.stop()  # its last refresh draws the snapshot as it is now, not the frame of the last tick
