"""What a plan names outside itself: the programs its commands run and the repository files its commands and tasks
refer to (pure; `runtime.programs` looks them up on disk and in git).

A task starts from a commit, so a file it needs that is only in the user's checkout (a new agent script, an
edited verify script) is not there; `orchard run` says so before any money is spent."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from orchard.core.model import Environment, Plan


@dataclass(frozen=True, slots=True)
class ProgramUse:
    """A program the plan runs, and where: `what` reads like "task handlers's verify"; `may_be_made` when the
    environment's setup (or its PATH) could provide it, so its absence before the run proves nothing."""

    program: str
    what: str
    may_be_made: bool = False


def programs(plan: Plan) -> list[ProgramUse]:
    """Every command agent's program, every verify program, the merge gate's and each `notify` command's, in plan
    order."""
    uses: list[ProgramUse] = []
    for agent in plan.agents.values():
        command = agent.option("command") if agent.type == "command" else None
        if command:
            uses.append(ProgramUse(str(command[0]), f"agent {agent.name}'s command"))
    for task in plan.tasks:
        if task.verify:
            uses.append(ProgramUse(task.verify[0], f"task {task.id}'s verify", _provides(plan.environment_of(task.id))))
    if plan.gate is not None:
        uses.append(ProgramUse(plan.gate.verify[0], "integration_verify", _provides(plan.environment)))
    for number, entry in enumerate(plan.notify, start=1):
        if entry.command:
            uses.append(ProgramUse(entry.command[0], f"notify[{number}]'s command"))
    return [use for use in uses if "{" not in use.program]  # a placeholder is only known at run time


def _provides(environment: Environment) -> bool:
    return bool(environment.setup) or any(name == "PATH" for name, _ in environment.env)


def referenced_files(plan: Plan) -> dict[str, str]:
    """Repository-relative paths the plan's commands and tasks name, each with the first thing naming it (a path
    only if it could be one: not an option, not a placeholder; whether it exists is for the caller to see)."""
    found: dict[str, str] = {}

    def note(args: tuple[str, ...] | list[str], what: str) -> None:
        for arg in args:
            path = _as_path(str(arg))
            if path is not None:
                found.setdefault(path, what)

    for agent in plan.agents.values():
        note(list(agent.option("command") or ()) if agent.type == "command" else [], f"agent {agent.name}'s command")
    for task in plan.tasks:
        if task.prompt_file:
            note([task.prompt_file], f"task {task.id}'s prompt_file")
        note(task.verify or (), f"task {task.id}'s verify")
    for environment, where in _environments(plan):
        for command in (*environment.setup, *environment.teardown):
            note(command, f"{where}'s setup or teardown")
    if plan.gate is not None:
        note(plan.gate.verify, "integration_verify")
    return found


def _environments(plan: Plan) -> list[tuple[Environment, str]]:
    return [(plan.environment, "environment"),
            *((t.environment, f"task {t.id}'s environment") for t in plan.tasks if t.environment is not None)]


def _as_path(arg: str) -> str | None:
    """The argument as a normalized relative path, or None when it cannot be one of the repository's files."""
    if not arg or arg.startswith(("-", "/", "~")) or "{" in arg or "\n" in arg or "$" in arg:
        return None
    path = posixpath.normpath(arg)
    return None if path in (".", "") or path.startswith("../") or path == ".." else path
