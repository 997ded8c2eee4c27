"""Which failed attempts are tried again, and after how long: the failure classes of `Outcome`, pure.

Transient failures (the API erred, the agent crashed, stalled or ran out of time) wait the task's `retry_backoff`,
doubling with each one (with a jitter, capped at `RETRY_BACKOFF_CAP_S`), then run again. Permanent ones (bad
credentials, the turn limit, no changes, a tampered result, a cancel) are not retried unless the task's `retry_on`
names them. A failed verify, an agent's own error and a rejected result (refused by the guardrails, or on a branch
that left its start) are retried at once with their feedback, as a conflict is. Every retry uses one of the
task's `retries`.
"""

from __future__ import annotations

from enum import StrEnum

from orchard.core.model import Outcome, Task

RETRY_BACKOFF_CAP_S = 600.0
JITTER = 0.2  # a wait is its doubling value ± 20 %: tasks that failed together do not all come back together


class FailureClass(StrEnum):
    TRANSIENT = "transient"  # retried after a backoff
    PERMANENT = "permanent"  # not retried, unless `retry_on` says so
    FEEDBACK = "feedback"  # retried at once, told what went wrong
    NONE = "none"  # not a failure (success), or one that uses no retry (rate limit, interruption)


# a setup that failed (a network step, often) is tried once more without using a retry, after the backoff too
TRANSIENT = frozenset({Outcome.API_ERROR, Outcome.CRASHED, Outcome.STALLED, Outcome.TIMEOUT, Outcome.SETUP_FAILED})
PERMANENT = frozenset({Outcome.AUTH, Outcome.MAX_TURNS, Outcome.NO_CHANGES, Outcome.TAMPERED, Outcome.CANCELLED})
# `rejected` carries feedback a retry can act on: the guardrails' refusal names the lines a result dropped, the
# branch check what the agent did to its branch
FEEDBACK = frozenset({Outcome.AGENT_ERROR, Outcome.VERIFY_FAILED, Outcome.REJECTED})
# What `retry_on` may name: a permanent failure (the others are retried anyway, or use no retry)
RETRY_ON_CHOICES = tuple(o.value for o in Outcome if o in PERMANENT and o is not Outcome.CANCELLED)


def failure_class(outcome: Outcome) -> FailureClass:
    if outcome in TRANSIENT:
        return FailureClass.TRANSIENT
    if outcome in PERMANENT:
        return FailureClass.PERMANENT
    if outcome in FEEDBACK:
        return FailureClass.FEEDBACK
    return FailureClass.NONE


def retried(task: Task, outcome: Outcome) -> bool:
    """Whether this failure may be retried at all (the task's `retries` still bound how often)."""
    kind = failure_class(outcome)
    if kind is FailureClass.PERMANENT:
        return outcome in task.retry_on
    return kind is not FailureClass.NONE


def backoff_s(task: Task, outcome: Outcome, streak: int) -> float:
    """How long the `streak`-th transient failure in a row waits before the next attempt (0 for other classes).

    The jitter is derived from the task and the streak rather than drawn, so the scheduler stays a pure function
    and a run's waits can be replayed."""
    if failure_class(outcome) is not FailureClass.TRANSIENT or task.retry_backoff_s <= 0 or streak < 1:
        return 0.0
    base = min(RETRY_BACKOFF_CAP_S, task.retry_backoff_s * 2 ** min(streak - 1, 32))
    unit = _fnv1a(f"{task.id}\0{streak}") / 2**64  # [0, 1)
    return float(min(RETRY_BACKOFF_CAP_S, base * (1 - JITTER + 2 * JITTER * unit)))


def _fnv1a(text: str) -> int:
    """A 64-bit FNV-1a hash: a stable number from a string, the same in every process (`hash()` is salted)."""
    value = 0xCBF29CE484222325
    for byte in text.encode():
        value = ((value ^ byte) * 0x100000001B3) % 2**64
    return value
