"""The text orchard adds to a task's prompt on a retry: why the last attempt failed and what to do."""

from __future__ import annotations

from collections.abc import Sequence

BASELINE_RED = "baseline_red"  # the mark of a verify failure that was there before the agent (`runtime.preflight`)


def verify_feedback(command: Sequence[str], exit_code: int | None, tail: str, *, red_on_base: bool = False) -> str:
    """Feedback after a failed verify command, with the tail of its output; `red_on_base` when the same command
    failed on the untouched base before any agent ran, which the agent is told rather than blamed for."""
    shown = " ".join(command)
    before = (f"Note ({BASELINE_RED}): `{shown}` already failed on the base branch before any agent changed anything, "
              "so some of these failures may not be yours; make sure your own change is right and that you break "
              "nothing more.\n") if red_on_base else ""
    return (
        f"The previous attempt's changes did not pass the verify command `{shown}` (exit code {exit_code}).\n"
        f"{before}The end of its output:\n```\n{tail.strip()}\n```\n"
        "Fix the problem so that the verify command passes."
    )


def conflict_feedback(paths: Sequence[str]) -> str:
    """Feedback after a merge conflict with work merged meanwhile."""
    listed = "\n".join(f"- {p}" for p in paths) or "- (git named no paths)"
    return (
        "The previous attempt's changes conflicted with work merged into the integration branch meanwhile, on:\n"
        f"{listed}\n"
        "This attempt starts from the new integration tip, which contains that work. "
        "Make your change on top of it, keeping what is already there."
    )


INTEGRATION_FAILED = "integration_failed"  # the gate blamed the result (`runtime.gate`)


def integration_feedback(command: Sequence[str], tail: str, *, merged_with: Sequence[str]) -> str:
    """Feedback after the gate blamed a result: its change passed its own verify, but the project's check failed
    once it was merged with the integration branch (and `merged_with`, results checked in the same candidate)."""
    shown = " ".join(command)
    others = f", together with {', '.join(merged_with)}," if merged_with else ""
    return (
        f"The previous attempt's changes passed their own verify, but the project's integration check `{shown}` "
        f"failed when they were merged into the integration branch{others} which holds work other tasks merged "
        f"meanwhile.\nThe end of its output:\n```\n{tail.strip()}\n```\n"
        "This attempt starts from the integration tip as it is now. Make your change work with what is there "
        "(a renamed function, a changed interface), so that the integration check passes."
    )


def failure_feedback(outcome: str, detail: str) -> str:
    """Feedback after an agent failure (non-zero exit, timeout, no changes …)."""
    return f"The previous attempt ended with `{outcome}`: {detail.strip() or 'no detail'}.\nPlease complete the task."


def compose_prompt(prompt: str, feedback: str, attempt: int) -> str:
    """The task prompt, plus orchard's feedback section when there is any."""
    if not feedback:
        return prompt
    return f"{prompt.rstrip()}\n\n---\n## Feedback from orchard (attempt {attempt})\n\n{feedback}\n"
