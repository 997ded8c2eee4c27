"""Checking one draft: the plan YAML taken from the planner's answer, completed with the configured agents (and
`--base`), written beside the output file and loaded by the normal plan loader; every problem found, worded as
`orchard plan` words it, for the planner to fix.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from orchard import plan as plan_loader
from orchard.core.model import Plan
from orchard.errors import EnvironmentProblem, PlanError, Problem
from orchard.plan.raw import INVALID, Problems
from orchard.plan.readers import parse_yaml
from orchard.planner.config import AgentsConfig
from orchard.planner.prompt import RESERVED_KEYS, plan_block

# What orchard fills in itself: a draft's own is dropped (with a warning), not held against it.
REPLACED_KEYS = ("agents", "base")


@dataclass(frozen=True)
class Target:
    """What a valid draft must fit and where it goes."""

    config: AgentsConfig
    out: Path
    repo_root: Path
    max_tasks: int
    default_agent: str
    base: str | None = None
    header: str = ""  # comment lines put at the top of the written plan


@dataclass(frozen=True)
class Checked:
    """One draft after checking: the plan text to write and its plan when valid, else the problems."""

    answer: str  # the YAML block, or the whole answer when it had none (quoted back to a fresh session)
    text: str = ""
    plan: Plan | None = None
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def check_draft(message: str, target: Target) -> Checked:
    """Read the plan in the planner's final `message` and check it against `target`."""
    block = plan_block(message)
    if block is None:
        return Checked(message, problems=("the answer has no fenced ```yaml block holding the plan",))
    problems = Problems()
    data = parse_yaml(block, target.out.name, problems)
    if data is INVALID:
        return Checked(block, problems=tuple(str(p) for p in problems.items))
    if not isinstance(data, Mapping):
        return Checked(block, problems=("the plan must be a YAML mapping with a `tasks` list",))
    reserved = [f"field '{k}': not the planner's to set; leave it out" for k in RESERVED_KEYS
                if k in data and k not in REPLACED_KEYS]
    if reserved:
        return Checked(block, problems=tuple(reserved))
    warnings = tuple(f"the draft's own `{k}:` was replaced by orchard's" for k in REPLACED_KEYS if k in data)
    text = target.header + dump_plan(completed(data, target))
    plan, found = load_text(text, target)
    if plan is not None and len(plan.tasks) > target.max_tasks:
        found = (f"the plan has {len(plan.tasks)} tasks; at most {target.max_tasks} are asked for (merge some)",)
    return Checked(block, text, plan if not found else None, found, warnings)


def completed(draft: Mapping[Any, Any], target: Target) -> dict[Any, Any]:
    """The draft with the configured agents (and `--base`) in place of its own, and a default agent for tasks
    that name none when there is more than one to choose from."""
    data = {key: value for key, value in draft.items() if key not in REPLACED_KEYS}
    defaults = data.get("defaults")
    if len(target.config.specs) > 1 and (defaults is None or isinstance(defaults, Mapping)):
        data["defaults"] = {"agent": target.default_agent, **(defaults or {})}
    head: dict[Any, Any] = {"base": target.base} if target.base is not None else {}
    return {**head, **data, "agents": dict(target.config.raw)}


class _Dumper(yaml.SafeDumper):
    """Written like a hand-written plan: lists indented under their key, short lists of plain values on one line
    (`files: [a.py, b.py]`), multi-line strings (prompts) as literal blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value.strip("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.SequenceNode:
    plain = all(isinstance(v, str | int | float | bool) and "\n" not in str(v) for v in value)
    short = plain and sum(len(str(v)) + 2 for v in value) <= FLOW_WIDTH
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=short)


FLOW_WIDTH = 80
_Dumper.add_representer(str, _str)
_Dumper.add_representer(list, _list)


def dump_plan(data: Mapping[Any, Any]) -> str:
    """`data` as plan YAML: keys in the order given, long lines left long."""
    return yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def load_text(text: str, target: Target) -> tuple[Plan | None, tuple[str, ...]]:
    """Load `text` with the plan loader as if it were `target.out` (a temporary file beside it, so relative paths
    and the repository check resolve as they will); its problems with the temporary name replaced."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.out.stem}.draft-", suffix=".yaml", dir=target.out.parent)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write beside {target.out}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            return plan_loader.load(name, target.repo_root), ()
        except PlanError as exc:
            return None, tuple(str(_renamed(p, name, target.out)) for p in exc.problems)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _renamed(problem: Problem, temporary: str, out: Path) -> Problem:
    return replace(problem, file=out.name) if problem.file == temporary else problem
