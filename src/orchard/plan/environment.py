"""The `environment:` block (top level of a plan, or a task's own over it): what a task's worktree gets besides the
tracked files. Each key is checked on its own, so every bad one is reported (file, task, `environment.<key>`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from orchard.core.model import Environment
from orchard.plan import fields as f
from orchard.plan.raw import INVALID, Problems

ENVIRONMENT_KEYS = ("include", "setup", "setup_inputs", "keep", "teardown", "setup_timeout", "env", "ports")
MAX_PORTS = 1000  # a block of ports per running task: more would exhaust the range at any real `parallel`


def commands(value: Any) -> tuple[tuple[str, ...], ...]:
    """A list of commands, each an argv list or a string split like a shell would (as `verify`)."""
    if isinstance(value, str):
        return (f.argv(value),)
    if not isinstance(value, list | tuple):
        raise f.FieldError(f"expected a list of commands, got {f.describe(value)}")
    return tuple(f.argv(item) for item in value)


def patterns(value: Any) -> tuple[str, ...]:
    """Git-ignore patterns relative to the repository (a leading `/` anchors at its root, `!` excludes again);
    none through `..`."""
    found = f.string_list(value)
    for pattern in found:
        path = pattern.removeprefix("!")
        if not path.strip():
            raise f.FieldError("a pattern is empty")
        if ".." in path.replace("\\", "/").split("/"):
            raise f.FieldError(f"pattern {f.show(pattern)} must stay inside the repository")
    return found


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(f.env_map(value).items()))


_COERCERS: Mapping[str, tuple[str, Callable[[Any], Any]]] = {
    "include": ("include", patterns),
    "setup": ("setup", commands),
    "setup_inputs": ("setup_inputs", patterns),
    "keep": ("keep", patterns),
    "teardown": ("teardown", commands),
    "setup_timeout": ("setup_timeout_s", partial(f.duration, positive=True)),
    "env": ("env", _pairs),
    "ports": ("ports", partial(f.integer, minimum=0)),
}


def read_environment(value: Any, file: str, problems: Problems, *, over: Environment, task: str = "") -> Environment:
    """`over` with the keys of an `environment:` mapping replaced; bad keys are reported and left as in `over`."""
    if not isinstance(value, Mapping):
        problems.add(file, f"expected a mapping of {', '.join(ENVIRONMENT_KEYS)}, got {f.describe(value)}",
                     task, "environment")
        return over
    problems.check_keys(value, ENVIRONMENT_KEYS, file, task=task, prefix="environment.")
    changes: dict[str, Any] = {}
    for key, (name, coercer) in _COERCERS.items():
        if key in value and value[key] is not None:
            coerced = problems.coerce(coercer, value[key], file, task, f"environment.{key}")
            if coerced is not INVALID:
                changes[name] = coerced
    if changes.get("ports", 0) > MAX_PORTS:
        problems.add(file, f"at most {MAX_PORTS} ports per task, got {changes['ports']}", task, "environment.ports")
        del changes["ports"]
    return replace(over, **changes)
