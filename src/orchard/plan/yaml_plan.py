"""Reader for a single YAML plan file (settings plus a `tasks:` list)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchard.plan import fields as f
from orchard.plan.raw import INVALID, Problems, RawPlan, RawTask
from orchard.plan.readers import containment_root, parse_yaml, read_text
from orchard.plan.settings import TOP_LEVEL_KEYS


def read_yaml_plan(path: Path, repo_root: str | Path | None) -> RawPlan:
    """A RawPlan from a YAML plan file; unreadable or malformed input becomes recorded problems."""
    file = str(path)
    root, root_kind = containment_root(path.parent, repo_root)
    raw = RawPlan(file, root, root_kind, {}, file, TOP_LEVEL_KEYS)
    text = read_text(path, file, raw.problems)
    data = INVALID if text is None else parse_yaml(text, file, raw.problems)
    if data is INVALID:
        return raw
    if not isinstance(data, Mapping):
        raw.problems.add(file, f"the top level must be a mapping with a 'tasks' list, got {f.describe(data)}")
        return raw
    raw.config = data
    raw.tasks = raw_tasks(data.get("tasks"), file, path.parent, raw.problems)
    return raw


def raw_tasks(value: Any, file: str, base_dir: Path, problems: Problems) -> list[RawTask]:
    """The entries of a `tasks:` list; entries that are not mappings are reported and skipped."""
    if value is None:
        problems.add(file, "the plan has no 'tasks' list", field="tasks")
        return []
    if not isinstance(value, list):
        problems.add(file, f"'tasks' must be a list of tasks, got {f.describe(value)}", field="tasks")
        return []
    out: list[RawTask] = []
    for number, entry in enumerate(value, start=1):
        if not isinstance(entry, Mapping):
            problems.add(file, f"each task must be a mapping, got {f.describe(entry)}", f"#{number}")
            continue
        out.append(RawTask(entry, file, f"task #{number}", base_dir, f.TASK_FIELDS, number))
    return out
