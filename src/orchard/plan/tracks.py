"""Tracks: ordered task lists from `tracks:` / tracks.json, extended by each task's own `track` field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchard.plan import fields as f
from orchard.plan.raw import INVALID, Problems
from orchard.plan.tasks import Draft


@dataclass
class Tracks:
    """Track members in order, the file each track was first defined in, and each task's track."""

    members: dict[str, list[str]] = field(default_factory=dict)
    file: dict[str, str] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)


def assemble_tracks(sources: list[tuple[str, Any]], drafts: Mapping[str, Draft], problems: Problems) -> Tracks:
    """Build the tracks from (file, raw mapping) sources then task `track` fields; set each draft's track."""
    tracks = Tracks()
    for file, raw in sources:
        _add_source(file, raw, drafts, tracks, problems)
    for draft in drafts.values():
        name = draft.kwargs.get("track")
        if draft.track_is_default and draft.id in tracks.owner:
            continue
        if name is not None and tracks.owner.get(draft.id) != name:
            tracks.file.setdefault(name, draft.file)
            _join(name, draft.id, draft.file, where="track", tracks=tracks, problems=problems)
    for draft in drafts.values():
        draft.kwargs["track"] = tracks.owner.get(draft.id)
    return tracks


def _add_source(file: str, raw: Any, drafts: Mapping[str, Draft], tracks: Tracks, problems: Problems) -> None:
    """Add the tracks of one `tracks:` mapping."""
    if raw is None:
        return
    if not isinstance(raw, Mapping):
        problems.add(
            file, f"expected a mapping of track name → list of task ids, got {f.describe(raw)}", field="tracks"
        )
        return
    for name, ids in raw.items():
        if not isinstance(name, str) or not name.strip():
            problems.add(file, f"track names must be non-empty strings, got {f.show(name)}", field="tracks")
            continue
        if name in tracks.file:
            problems.add(file, f"track '{name}' is defined twice (also in {tracks.file[name]})", field="tracks")
            continue
        tracks.file[name] = file
        tracks.members[name] = []
        task_ids = problems.coerce(_id_list, ids, file, field=f"tracks.{name}")
        for task_id in () if task_ids is INVALID else task_ids:
            if task_id not in drafts:
                problems.add(file, f"track '{name}' lists unknown task '{task_id}'", field=f"tracks.{name}")
            else:
                _join(name, task_id, file, where=f"tracks.{name}", tracks=tracks, problems=problems)


def _id_list(value: Any) -> list[str]:
    """A list of task ids, duplicates kept so that they can be reported."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise f.FieldError(f"expected a list of task ids, got {f.describe(value)}")
    return list(value)


def _join(name: str, task_id: str, file: str, *, where: str, tracks: Tracks, problems: Problems) -> None:
    """Append a task to a track unless it already belongs to one."""
    current = tracks.owner.get(task_id)
    if current == name:
        problems.add(file, f"track '{name}' lists task '{task_id}' twice", task_id, where)
    elif current is not None:
        problems.add(file, f"task '{task_id}' is in two tracks: '{current}' and '{name}'", task_id, where)
    else:
        tracks.owner[task_id] = name
        tracks.members.setdefault(name, []).append(task_id)
