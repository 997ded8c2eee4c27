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


def failure_feedback(outcome: str, detail: str) -> str:
    """Feedback after an agent failure (non-zero exit, timeout, no changes …)."""
    return f"The previous attempt ended with `{outcome}`: {detail.strip() or 'no detail'}.\nPlease complete the task."


def compose_prompt(prompt: str, feedback: str, attempt: int) -> str:
    """The task prompt, plus orchard's feedback section when there is any."""
    if not feedback:
        return prompt
    return f"{prompt.rstrip()}\n\n---\n## Feedback from orchard (attempt {attempt})\n\n{feedback}\n"
