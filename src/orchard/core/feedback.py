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


def compose_prompt(prompt: str, feedback: str, attempt: int, context: str = "") -> str:
    """The task prompt, then what its dependencies did (`core.context`) and orchard's feedback, when there is any."""
    if context:
        prompt = f"{prompt.rstrip()}\n\n---\n{context.rstrip()}\n"
    if not feedback:
        return prompt
    return f"{prompt.rstrip()}\n\n---\n## Feedback from orchard (attempt {attempt})\n\n{feedback}\n"


def resolve_feedback(paths: Sequence[str], *, ours: Sequence[str], theirs: Sequence[str]) -> str:
    """The prompt of an attempt that resolves its result's conflict (`on_conflict: resolve`): the worktree holds the
    integration tip with the previous result merged in, git's conflict markers left in the files."""
    listed = "\n".join(f"- {p}" for p in paths) or "- (git named no paths)"
    return (
        "Your previous result conflicted with work merged into the integration branch meanwhile. This worktree "
        "holds the integration tip with your previous result merged in and the merge left unfinished: git's "
        "conflict markers (<<<<<<< ours, ||||||| base, ======= , >>>>>>> theirs) are in:\n"
        f"{listed}\n"
        "Resolve only these conflicts: remove every marker, keep every line the integration side (ours) has and "
        "the intent of your change (theirs). Change nothing else, and do not commit, abort or redo the merge: "
        "orchard commits it.\n"
        "The integration side's commits since the merge base:\n" + _bullets(ours) + "\n"
        "Your previous result's commits:\n" + _bullets(theirs)
    )


def resolution_refused(markers: Sequence[str], lost: str) -> str:
    """Why a conflict resolution was refused: markers left in files, or lines of the integration side dropped."""
    parts = []
    if markers:
        parts.append("conflict markers are still in " + ", ".join(markers))
    if lost:
        parts.append("lines the integration side had are gone:\n" + lost)
    return "the conflict resolution was refused: " + "; ".join(parts)


def protected_lines(found: dict[str, str]) -> str:
    """A result removed lines other tasks of the run added and merged: by task, the lines."""
    return "it removes lines that other tasks of this run added and merged:\n" + "\n".join(
        f"task {task}:\n{lines}" for task, lines in sorted(found.items()))


REFUSED = "The previous attempt's result was refused:"


def keep_lines_feedback(detail: str) -> str:
    """Feedback after a refused result (`protect_merged: reject`, or a refused conflict resolution)."""
    return (f"{REFUSED} {detail.strip()}\n"
            "Keep those lines (they are other work that is already merged) and make your change around them.")


def _bullets(items: Sequence[str]) -> str:
    return "\n".join(f"- {item}" for item in items[:20]) or "- (none)"
