"""The format-neutral intermediate form every plan reader produces, and the problem collector."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchard.errors import Problem
from orchard.plan.fields import Coercer, FieldError, show, unknown_field_message


class _Invalid:
    """Marker type of INVALID."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Any = _Invalid()  # returned where a value could not be read; its problem is already recorded


class Problems:
    """Collects every Problem found while a plan is read and built."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, file: str, message: str, task: str = "", field: str = "") -> None:
        """Record one problem."""
        self.items.append(Problem(file=file, message=message, task=task, field=field))

    def coerce(self, coercer: Coercer, value: Any, file: str, task: str = "", field: str = "") -> Any:
        """The coerced value, or INVALID after recording the coercer's complaint."""
        try:
            return coercer(value)
        except FieldError as exc:
            self.add(file, str(exc), task, field)
            return INVALID

    def check_keys(
        self,
        mapping: Mapping[Any, Any],
        allowed: Iterable[str],
        file: str,
        *,
        task: str = "",
        prefix: str = "",
        hints: Mapping[str, str] | None = None,
    ) -> None:
        """Report keys that are not strings or not allowed (with did-you-mean or a specific hint)."""
        names = frozenset(allowed)
        for key in mapping:
            if not isinstance(key, str):
                self.add(file, f"field names must be strings, got {show(key)}", task, prefix.rstrip("."))
            elif key not in names:
                message = (hints or {}).get(key) or unknown_field_message(key, names)
                self.add(file, message, task, prefix + key)


@dataclass
class RawTask:
    """One task as read from a file, before any coercion."""

    data: Mapping[Any, Any]
    file: str  # where problems of this task are reported
    label: str  # how a duplicate-id message names it: "task #3" or a file path
    base_dir: Path  # prompt_file is relative to this
    allowed: frozenset[str]  # field names this format accepts
    number: int  # 1-based position in the plan
    default_id: str | None = None  # the file stem for one-file-per-task formats
    prompt: str | None = None  # text already read (Markdown body); then prompt_file below is its path
    prompt_file: str | None = None


@dataclass
class RawPlan:
    """Everything a reader found: plan settings, raw tasks, extra track sources and early problems."""

    source: str
    root: Path  # prompt files must resolve inside this directory
    root_kind: str  # "repository" or "plan directory", for messages
    config: Mapping[Any, Any]
    config_file: str
    config_keys: frozenset[str]
    tasks: list[RawTask] = field(default_factory=list)
    track_sources: list[tuple[str, Any]] = field(default_factory=list)  # (file, raw tracks mapping)
    problems: Problems = field(default_factory=Problems)
    default_compat: str = "none"  # `compat` where the plan does not say (a workstreams directory's: workstreams)
