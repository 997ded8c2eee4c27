"""Reader for a workstreams directory: one JSON object per task, optional tracks.json and settings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from orchard.plan import fields as f
from orchard.plan.raw import INVALID, RawPlan, RawTask
from orchard.plan.readers import containment_root, parse_json, read_config, read_text
from orchard.plan.settings import CONFIG_KEYS

CONFIG_NAMES = ("orchard.yaml", "orchard.json")
TRACKS_FILE = "tracks.json"
NOT_WORKSTREAMS = frozenset({TRACKS_FILE, "orchard.json"})


def read_workstreams(path: Path, repo_root: str | Path | None, json_files: list[Path]) -> RawPlan:
    """A RawPlan whose tasks are the given workstream JSON files, in the order given."""
    root, root_kind = containment_root(path, repo_root)
    raw = RawPlan(str(path), root, root_kind, {}, str(path), CONFIG_KEYS, default_compat="workstreams")
    raw.config, raw.config_file = read_config(path, CONFIG_NAMES, raw.problems)
    tracks_file = path / TRACKS_FILE
    if tracks_file.is_file():
        text = read_text(tracks_file, str(tracks_file), raw.problems)
        tracks = INVALID if text is None else parse_json(text, str(tracks_file), raw.problems)
        if tracks is not INVALID:
            raw.track_sources.append((str(tracks_file), tracks))
    for number, json_file in enumerate(json_files, start=1):
        task = _workstream(json_file, number, raw)
        if task is not None:
            raw.tasks.append(task)
    return raw


def _workstream(json_file: Path, number: int, raw: RawPlan) -> RawTask | None:
    """The raw task of one workstream file (None if it cannot be read or is not an object)."""
    file = str(json_file)
    text = read_text(json_file, file, raw.problems)
    data = INVALID if text is None else parse_json(text, file, raw.problems)
    if data is INVALID:
        return None
    if not isinstance(data, Mapping):
        raw.problems.add(file, f"a workstream must be a JSON object, got {f.describe(data)}")
        return None
    return RawTask(data, file, file, json_file.parent, f.TASK_FIELDS, number, json_file.stem)
