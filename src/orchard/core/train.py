"""The gated merge train (pure): which finished results the next integration check takes, and what its verdict
means. Results queue in the order they finished; a candidate is the green tip plus up to `batch` of them, and only a
passing candidate moves the integration branch. A failing one is bisected in queue order, as bors-ng does: its first
half is checked on the green tip, then its second. A half whose sibling passed is known to fail (it is the failed tree
again) and is split further without a check; a result is blamed only when it failed a check alone, so a flaky check
never convicts a task on inference.

The runtime builds each candidate (merging in order, dropping results that conflict) and runs the check; this module
only decides, so every ordering and count can be tested without git (`tests/test_train.py`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

DEFAULT_BATCH = 8


@dataclass
class _Segment:
    """Results to check together, in queue order; `red` when the same tree is known to have failed already."""

    tasks: tuple[str, ...]
    red: bool = False
    red_if_previous_passes: bool = False  # the second half of a failed candidate


@dataclass(frozen=True)
class Check:
    """Check the green tip plus these results, merged in this order."""

    tasks: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    """What a finished check decided: results now on the integration branch, and results that failed it alone."""

    merged: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


@dataclass
class Train:
    """The queue of results waiting for the gate, the candidate being checked, and the halves of a failed one."""

    batch: int = DEFAULT_BATCH
    waiting: deque[str] = field(default_factory=deque)
    bisecting: deque[_Segment] = field(default_factory=deque)
    checking: _Segment | None = None
    checks: int = 0
    bisections: int = 0

    def add(self, task_id: str) -> None:
        """A result passed its own verify and waits for the gate."""
        self.waiting.append(task_id)

    def withdraw(self, task_id: str) -> None:
        """A waiting result leaves the train (its task was cancelled); one being checked stays in its check."""
        if task_id in self.waiting:
            self.waiting.remove(task_id)
        for segment in self.bisecting:
            segment.tasks = tuple(t for t in segment.tasks if t != task_id)
            segment.red = segment.red_if_previous_passes = False  # another tree now
        self.bisecting = deque(s for s in self.bisecting if s.tasks)

    @property
    def busy(self) -> bool:
        return self.checking is not None

    @property
    def idle(self) -> bool:
        """Nothing checking, nothing waiting."""
        return self.checking is None and not self.waiting and not self.bisecting

    def next_check(self) -> Check | None:
        """The next candidate to check, if none is being checked and any result waits; halves of a failed candidate
        come first, then up to `batch` waiting results."""
        if self.checking is not None:
            return None
        while self.bisecting:
            segment = self.bisecting.popleft()
            if segment.red and len(segment.tasks) > 1:  # the failed tree again: split it without a check
                self._split(segment)
                continue
            return self._start(segment)
        if not self.waiting:
            return None
        taken = tuple(self.waiting.popleft() for _ in range(min(self.batch, len(self.waiting))))
        return self._start(_Segment(taken))

    def finished(self, passed: bool, *, dropped: tuple[str, ...] = ()) -> Verdict:
        """The verdict of the check in progress. `dropped`: results the candidate left out (they conflicted: their
        tasks go back to their agents), which makes it another tree than the one any inference was about."""
        segment = self.checking
        assert segment is not None, "no check in progress"
        self.checking = None
        kept = tuple(t for t in segment.tasks if t not in dropped)
        if dropped:
            for later in self.bisecting:
                later.red = later.red_if_previous_passes = False
        if passed or not kept:
            if self.bisecting and self.bisecting[0].red_if_previous_passes and not dropped:
                self.bisecting[0].red = True  # tip + this + that failed; tip + this passed: that fails
            return Verdict(merged=kept)
        if self.bisecting:
            self.bisecting[0].red_if_previous_passes = False  # nothing is known of the sibling any more
        if len(kept) == 1:
            return Verdict(failed=kept)
        self._split(_Segment(kept))
        return Verdict()

    def _start(self, segment: _Segment) -> Check:
        self.checking = segment
        self.checks += 1
        return Check(segment.tasks)

    def _split(self, segment: _Segment) -> None:
        """Put the two halves of a failed candidate first in line, the first half to be checked first."""
        self.bisections += 1
        middle = (len(segment.tasks) + 1) // 2
        first, second = segment.tasks[:middle], segment.tasks[middle:]
        self.bisecting.appendleft(_Segment(second, red_if_previous_passes=True))
        self.bisecting.appendleft(_Segment(first))
