"""The gated merge train (pure): which finished results the next integration check takes, and what its verdict
means. Results queue in the order they finished; a candidate is the green tip plus up to `batch` of them, and only a
passing candidate moves the integration branch. A failing one is bisected in queue order, as bors-ng does: its first
half is checked on the green tip. If that half passes, the second half on the new tip is the tree that failed, so it
is known to fail without a check (split again, or blamed when it is one result). If the first half fails, nothing is
known of the second: it goes back to the head of the queue and is batched with what waits behind it.

The runtime builds each candidate (merging in order, dropping results that conflict) and runs the check; this module
only decides, so every ordering and count can be tested without git (`tests/test_train.py`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

DEFAULT_BATCH = 8


@dataclass(frozen=True)
class Check:
    """Check the green tip plus these results, merged in this order."""

    tasks: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    """What a finished check decided: results now on the integration branch, and results that failed the gate
    (`inferred`: blamed because the tree they make with the new tip is one that failed, not by a check of their own)."""

    merged: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    inferred: bool = False


@dataclass
class Train:
    """The queue of results waiting for the gate, the candidate being checked, and the halves of a failed one."""

    batch: int = DEFAULT_BATCH
    waiting: deque[str] = field(default_factory=deque)
    checking: tuple[str, ...] | None = None
    next_half: tuple[str, ...] = ()  # the first half of a failed candidate: checked next
    other_half: tuple[str, ...] = ()  # its second half: it fails if the first half passes
    checks: int = 0
    bisections: int = 0

    def add(self, task_id: str) -> None:
        """A result passed its own verify and waits for the gate."""
        self.waiting.append(task_id)

    def withdraw(self, task_id: str) -> None:
        """A waiting result leaves the train (its task was cancelled); one being checked stays in its check."""
        if task_id in self.next_half or task_id in self.other_half:  # another tree now: nothing is known of it
            self._requeue(tuple(t for t in (*self.next_half, *self.other_half) if t != task_id))
            self.next_half = ()
        if task_id in self.waiting:
            self.waiting.remove(task_id)

    @property
    def busy(self) -> bool:
        return self.checking is not None

    @property
    def idle(self) -> bool:
        """Nothing checking, nothing waiting."""
        return self.checking is None and not self.waiting and not self.next_half and not self.other_half

    def next_check(self) -> Check | None:
        """The next candidate to check, if none is being checked and any result waits: the first half of a failed
        candidate, else up to `batch` waiting results."""
        if self.checking is not None:
            return None
        if self.next_half:
            taken, self.next_half = self.next_half, ()
        elif self.waiting:
            taken = tuple(self.waiting.popleft() for _ in range(min(self.batch, len(self.waiting))))
        else:
            return None
        self.checking = taken
        self.checks += 1
        return Check(taken)

    def finished(self, passed: bool, *, dropped: tuple[str, ...] = ()) -> Verdict:
        """The verdict of the check in progress. `dropped`: results the candidate left out (they conflicted: their
        tasks go back to their agents), which makes it another tree than the one any inference was about."""
        checked = self.checking
        assert checked is not None, "no check in progress"
        self.checking = None
        kept = tuple(t for t in checked if t not in dropped)
        other, self.other_half = self.other_half, ()
        if other and (dropped or not (passed or not kept)):
            self._requeue(other)  # nothing is known of it: batched again with what waits
            other = ()
        if passed or not kept:
            if len(other) == 1:  # tip + this + that failed; tip + this passed: that fails on the new tip
                return Verdict(merged=kept, failed=other, inferred=True)
            if other:
                self._bisect(other)
            return Verdict(merged=kept)
        if len(kept) == 1:
            return Verdict(failed=kept)
        self._bisect(kept)
        return Verdict()

    def _requeue(self, tasks: tuple[str, ...]) -> None:
        self.other_half = ()
        self.waiting.extendleft(reversed(tasks))

    def _bisect(self, tasks: tuple[str, ...]) -> None:
        """Check the first half of a failed candidate next; its second half waits for that verdict."""
        self.bisections += 1
        middle = (len(tasks) + 1) // 2
        self.next_half, self.other_half = tasks[:middle], tasks[middle:]
