"""Typed field coercion for raw plan input: each coercer returns a typed value or raises FieldError.

Coercers accept anything a YAML or JSON parser can produce and never raise anything but FieldError.
"""

from __future__ import annotations

import difflib
import re
import reprlib
import shlex
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

from orchard.core.durations import parse_duration
from orchard.core.model import CODEX_SANDBOXES, CONTEXT_MODES, PREFLIGHT_MODES, SANDBOX_MODES, Outcome
from orchard.core.retrying import RETRY_ON_CHOICES
from orchard.core.sizes import parse_size

Coercer = Callable[[Any], Any]

_DRIVE = re.compile(r"[A-Za-z]:[\\/]")  # a Windows drive-absolute path such as C:/src
_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlevel = 3


class FieldError(Exception):
    """A value of the wrong type or shape; its message is shown to the user as is."""


def show(value: object) -> str:
    """A short, safe repr of any value for messages (bounded length and depth)."""
    try:
        return _REPR.repr(value)
    except Exception:  # a repr can fail on exotic values; never let a message crash validation
        return f"<{type(value).__name__}>"


def describe(value: object) -> str:
    """Name the kind of a raw value in plain words: 'a list', 'a string', 'null' …"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({show(value)})"
    if isinstance(value, str):
        return f"a string ({show(value)})"
    if isinstance(value, int | float):
        return f"a number ({show(value)})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__} ({show(value)})"


def did_you_mean(key: str, allowed: Iterable[str]) -> str | None:
    """The closest allowed name to `key`, if any is close enough."""
    matches = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_field_message(key: str, allowed: Iterable[str]) -> str:
    """`unknown field 'x' (did you mean 'y'?)`, or the list of allowed names when nothing is close."""
    names = sorted(allowed)
    guess = did_you_mean(key, names)
    if guess:
        return f"unknown field '{key}' (did you mean '{guess}'?)"
    return f"unknown field '{key}' (allowed: {', '.join(names)})"


def string(value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str):
        raise FieldError(f"expected a string, got {describe(value)}")
    if not value.strip():
        raise FieldError("must not be empty")
    return value


def string_list(value: Any) -> tuple[str, ...]:
    """A string or a list of non-empty strings; duplicates are dropped, order kept."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise FieldError(f"expected a string or a list of strings, got {describe(value)}")
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise FieldError(f"expected a list of non-empty strings, found {describe(item)}")
    return tuple(dict.fromkeys(items))


def agent_choice(value: Any) -> str | tuple[str, ...]:
    """`agent`: one agent's name, or a list of them in order of preference (`core.scheduler` starts the task on the
    first with a free slot)."""
    if isinstance(value, str):
        return string(value)
    names = string_list(value)
    if not names:
        raise FieldError("expected an agent's name or a non-empty list of them")
    return names[0] if len(names) == 1 else names


# Bounds past which a number is a mistake, not a setting: the store keeps 64-bit integers, and no run lasts a year.
MAX_INTEGER = 2**62
MAX_DURATION_S = 366 * 86400.0


def integer(value: Any, minimum: int | None = None) -> int:
    """An integer (booleans and floats are refused), optionally at least `minimum`, at most `MAX_INTEGER`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(f"expected an integer, got {describe(value)}")
    if minimum is not None and value < minimum:
        raise FieldError(f"must be at least {minimum}, got {show(value)}")
    if abs(value) > MAX_INTEGER:
        raise FieldError(f"must be at most {MAX_INTEGER} in size, got {show(value)}")
    return value


def boolean(value: Any) -> bool:
    """A real boolean (true/false), not a string or a number."""
    if not isinstance(value, bool):
        raise FieldError(f"expected true or false, got {describe(value)}")
    return value


def duration(value: Any, positive: bool = False) -> float:
    """Seconds from a duration such as 30m, 1h30m, 90s or a plain number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        raise FieldError(f"a duration must not be negative, got {show(value)}")
    try:
        seconds = parse_duration(value)
    except (ValueError, OverflowError):
        raise FieldError(f"expected a duration like 30m, 1h30m or 90s, got {describe(value)}") from None
    if seconds != seconds or seconds == float("inf"):
        raise FieldError(f"expected a finite duration, got {show(value)}")
    if positive and seconds <= 0:
        raise FieldError(f"must be longer than zero, got {show(value)}")
    if seconds > MAX_DURATION_S:
        raise FieldError(f"must be at most 366 days, got {show(value)}")
    return seconds


def argv(value: Any) -> tuple[str, ...]:
    """A command line: a non-empty list of strings, or a string split like a shell would."""
    parts = extra_args(value)
    if not parts or not parts[0].strip():
        raise FieldError("the command is empty")
    return parts


def extra_args(value: Any) -> tuple[str, ...]:
    """Arguments, every one kept in order (repeats such as `-c a -c b` matter): a list, or a string split like
    a shell would."""
    if isinstance(value, str):
        try:
            parts = shlex.split(value)
        except ValueError as exc:
            raise FieldError(f"cannot split {show(value)} into arguments: {exc}") from None
    elif isinstance(value, list | tuple):
        parts = list(value)
        for item in parts:
            if not isinstance(item, str):
                raise FieldError(f"expected a list of strings, found {describe(item)}")
    else:
        raise FieldError(f"expected a list of strings or a command string, got {describe(value)}")
    if any("\0" in part for part in parts):  # no process can receive one: the spawn would fail, or cut it short
        raise FieldError("an argument contains a NUL byte")
    return tuple(parts)


def verify(value: Any) -> tuple[str, ...] | None:
    """A verify command as argv; null, an empty string or an empty list mean no verify."""
    if value is None or (isinstance(value, str | list | tuple) and not value):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return argv(value)


def file_globs(value: Any) -> tuple[str, ...]:
    """Relative path globs of the files a task touches; no empty, absolute or `..` entries."""
    globs = string_list(value)
    for glob in globs:
        if glob[:1] in "/\\" or _DRIVE.match(glob):
            raise FieldError(f"file glob {show(glob)} must be relative to the repository, not absolute")
        if ".." in glob.replace("\\", "/").split("/"):
            raise FieldError(f"file glob {show(glob)} must not contain '..'")
    return globs


def choice(options: tuple[str, ...], value: Any) -> str:
    """One of a fixed set of strings."""
    if not isinstance(value, str) or value not in options:
        raise FieldError(f"expected one of {', '.join(options)}, got {show(value)}")
    return value


def env_map(value: Any) -> Mapping[str, str]:
    """Environment variables: a mapping of name → string (numbers are turned into strings)."""
    if not isinstance(value, Mapping):
        raise FieldError(f"expected a mapping of variable name → value, got {describe(value)}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key:
            raise FieldError(f"invalid environment variable name {show(key)}")
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise FieldError(f"variable '{key}' must be a string, got {describe(item)}")
        if "\0" in key or "\0" in str(item):
            raise FieldError(f"variable {show(key)} contains a NUL byte")
        out[key] = str(item)
    return MappingProxyType(out)


def preflight_mode(value: Any) -> str:
    """The plan's `preflight`; YAML reads a bare `off` as false (and `on` as true)."""
    if isinstance(value, bool):
        return "auto" if value else "off"
    return choice(PREFLIGHT_MODES, value)


def sandbox_mode(value: Any) -> str:
    """orchard's sandbox mode; codex's own sandbox values get a pointer to `codex_sandbox`."""
    if value in CODEX_SANDBOXES:
        raise FieldError(f"{show(value)} is a codex sandbox: orchard's `sandbox` is one of {', '.join(SANDBOX_MODES)}; "
                         "codex's own is `codex_sandbox`")
    return choice(SANDBOX_MODES, value)


def absolute_paths(value: Any) -> tuple[str, ...]:
    """A list of absolute paths (`~/` expands to the home directory when the run starts)."""
    paths = string_list(value)
    for path in paths:
        if not (path.startswith("/") or path.startswith("~/")) or "\0" in path:
            raise FieldError(f"expected an absolute path (or one starting with ~/), got {show(path)}")
    return paths


def env_pass(value: Any) -> str | tuple[str, ...]:
    """Which variables of orchard's environment an agent (or a verify command) sees beyond the basics: a list of
    names or "all"."""
    if value == "all":
        return "all"
    if isinstance(value, str):
        raise FieldError(f'expected a list of variable names or "all", got {show(value)}')
    return string_list(value)


def money(value: Any) -> float:
    """A non-negative amount of US dollars."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != value:
        raise FieldError(f"expected an amount in USD ≥ 0, got {show(value)}")
    return float(value)


def size(value: Any) -> int:
    """A byte size: a whole number of bytes or a text like `500MB`, `2G`, `1.5GiB`."""
    if isinstance(value, bool | float):
        raise FieldError(f"expected a size like 500MB, 2G or 1.5GiB, got {show(value)}")
    if isinstance(value, int):
        if value < 0:
            raise FieldError(f"expected a size ≥ 0, got {show(value)}")
        return value
    if not isinstance(value, str):
        raise FieldError(f"expected a size like 500MB, 2G or 1.5GiB, got {describe(value)}")
    try:
        return parse_size(value)
    except ValueError as exc:
        raise FieldError(str(exc)) from None


def load_per_core(value: Any) -> float:
    """A load average per core (1.0: every core busy), > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or value == float("inf"):
        raise FieldError(f"expected a load per core > 0 such as 1.5, got {show(value)}")
    return float(value)


def pricing(value: Any) -> Mapping[str, float]:
    """`{input_per_mtok, output_per_mtok[, cached_input_per_mtok]}`: USD per million tokens, ≥ 0."""
    keys = ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok")
    if not isinstance(value, Mapping) or not {"input_per_mtok", "output_per_mtok"} <= set(value):
        raise FieldError(f"expected {{input_per_mtok: N, output_per_mtok: N}}, got {show(value)}")
    out: dict[str, float] = {}
    for key, raw in value.items():
        if key not in keys:
            raise FieldError(unknown_field_message(str(key), keys))
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0 or raw != raw:
            raise FieldError(f"'{key}' must be a number ≥ 0, got {show(raw)}")
        out[str(key)] = float(raw)
    return MappingProxyType(out)


def freeze(value: Any) -> Any:
    """An immutable copy of a raw value: lists become tuples, mappings read-only (iterative)."""
    if not isinstance(value, list | tuple | Mapping):
        return value
    return _freeze_nested(value)


def _freeze_nested(value: Any) -> Any:
    """Freeze a nested structure bottom-up without recursion; cyclic YAML aliases are refused."""
    done: dict[int, Any] = {}
    stack: list[tuple[Any, bool]] = [(value, False)]
    active: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in done:
            continue
        items = list(node.values()) if isinstance(node, Mapping) else list(node)
        if not children_done:
            if key in active:
                raise FieldError("the value refers to itself (a cyclic YAML alias)")
            active.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in items if isinstance(c, list | tuple | Mapping) and id(c) not in done)
            continue
        active.discard(key)
        if isinstance(node, Mapping):
            done[key] = MappingProxyType({k: done.get(id(v), v) for k, v in node.items()})
        else:
            done[key] = tuple(done.get(id(c), c) for c in items)
    return done[id(value)]


def retry_on(value: Any) -> tuple[Outcome, ...]:
    """`retry_on`: the permanent failures a task retries all the same (`core.retrying`)."""
    names = string_list(value)
    for name in names:
        if name not in RETRY_ON_CHOICES:
            raise FieldError(f"expected outcomes among {', '.join(RETRY_ON_CHOICES)}, got {show(name)} (transient "
                             "failures, a failed verify and an agent's error are retried anyway)")
    return tuple(Outcome(name) for name in names)


def at_least(minimum: int) -> Coercer:
    """An integer coercer with a lower bound."""
    return partial(integer, minimum=minimum)


# What `orchard set` may change (`core.steering`), checked as the plan's own fields are; `none` clears these two
SETTING_COERCERS: Mapping[str, Coercer] = MappingProxyType(
    {"parallel": at_least(1), "max_parallel": at_least(1), "budget_usd": money, "paused": boolean})
CLEARABLE_SETTINGS = ("max_parallel", "budget_usd")


def setting_value(setting: str, text: str) -> Any:
    """The value of one `orchard set KEY=VALUE`, read as YAML (as `orchard agents add --option` values are) and
    checked as the plan's field is; FieldError says what is wrong."""
    import yaml

    if text.strip().lower() == "none" and setting in CLEARABLE_SETTINGS:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FieldError(f"not a YAML value ({exc})") from None
    return SETTING_COERCERS[setting](value)


ON_CONFLICT = ("rerun", "resolve")  # a result that conflicts: its agent runs again from the tip, or resolves it
PROTECT_MERGED = ("warn", "reject", "off")  # a result that removes lines other tasks of the run merged
# Task fields other than id / prompt / prompt_file, by the name used in plan files.
TASK_COERCERS: Mapping[str, Coercer] = MappingProxyType(
    {
        "name": string,
        "depends_on": string_list,
        "files": file_globs,
        "agent": agent_choice,
        "verify": verify,
        "timeout": partial(duration, positive=True),
        "retries": at_least(0),
        "priority": integer,
        "track": string,
        "estimate": duration,
        "allow_empty": boolean,
        "budget_usd": money,
        "verify_env_pass": env_pass,
        "on_conflict": partial(choice, ON_CONFLICT),
        "protect_merged": partial(choice, PROTECT_MERGED),
        "retry_on": retry_on,
        "retry_backoff": duration,
        "context": partial(choice, CONTEXT_MODES),
    }
)
# Plan-file field name → `Task` keyword.
TASK_KWARG = MappingProxyType({"timeout": "timeout_s", "estimate": "estimate_s", "retry_backoff": "retry_backoff_s"})
TASK_FIELDS = frozenset({"id", "prompt", "prompt_file", "environment", *TASK_COERCERS})
FRONT_MATTER_FIELDS = TASK_FIELDS - {"prompt", "prompt_file"}
NO_DEFAULT_FIELDS = frozenset({"id", "name", "prompt", "prompt_file", "depends_on", "environment"})
DEFAULT_FIELDS = TASK_FIELDS - NO_DEFAULT_FIELDS
