"""Reader for a prompts directory: one Markdown file per task, optional YAML front matter, orchard.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchard.plan import fields as f
from orchard.plan.raw import INVALID, RawPlan, RawTask
from orchard.plan.readers import containment_root, parse_yaml, read_config, read_contained, split_front_matter
from orchard.plan.settings import CONFIG_KEYS

CONFIG_NAMES = ("orchard.yaml", "plan.yaml")


def read_prompts_dir(path: Path, repo_root: str | Path | None, md_files: list[Path]) -> RawPlan:
    """A RawPlan whose tasks are the given Markdown files, in the order given."""
    root, root_kind = containment_root(path, repo_root)
    raw = RawPlan(str(path), root, root_kind, {}, str(path), CONFIG_KEYS)
    raw.config, raw.config_file = read_config(path, CONFIG_NAMES, raw.problems)
    for number, md in enumerate(md_files, start=1):
        task = _markdown_task(md, number, raw)
        if task is not None:
            raw.tasks.append(task)
    return raw


def _markdown_task(md: Path, number: int, raw: RawPlan) -> RawTask | None:
    """The raw task of one Markdown file (None if it cannot be read at all)."""
    file = str(md)
    try:
        text, resolved = read_contained(md.name, md.parent, raw.root, raw.root_kind)
    except f.FieldError as exc:
        raw.problems.add(file, f"the prompt file {exc}")
        return None
    data: Mapping[Any, Any] = {}
    try:
        front, body, offset = split_front_matter(text)
    except f.FieldError as exc:
        raw.problems.add(file, str(exc))
        front, body, offset = None, text, 0
    if front is not None:
        data = _front_matter(front, file, offset, raw)
    return RawTask(data, file, file, md.parent, f.FRONT_MATTER_FIELDS, number, md.stem, body, resolved)


def _front_matter(front: str, file: str, offset: int, raw: RawPlan) -> Mapping[Any, Any]:
    """The front matter's fields, or {} after recording why they cannot be used."""
    parsed = parse_yaml(front, file, raw.problems, line_offset=offset)
    if parsed is None or parsed is INVALID:
        return {}
    if not isinstance(parsed, Mapping):
        raw.problems.add(file, f"the front matter must be a mapping of task fields, got {f.describe(parsed)}")
        return {}
    return parsed
