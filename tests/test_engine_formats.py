"""The prompts-directory and workstreams-directory formats, run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import orchard
from tests.conftest import agent_block, git
from tests.test_engine_acceptance import journal

SETTINGS = f"""parallel: 3
defaults: {{agent: fake, retries: 0}}
agents:
{agent_block()}"""


def test_prompts_directory_with_front_matter(repo: Path, tmp_path: Path) -> None:
    prompts = repo / "prompts"  # inside the repository, as users keep them
    prompts.mkdir()
    (prompts / "orchard.yaml").write_text(SETTINGS)
    (prompts / "01-schema.md").write_text("---\nid: schema\nestimate: 2m\n---\nAdd the schema.\n@write schema.sql x\n")
    (prompts / "02-api.md").write_text("---\ndepends_on: [schema]\n---\n@derive schema.sql api.txt api-on:\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "prompts")
    result = orchard.run(prompts, repo=repo)
    assert result.exit_code == 0, result.summary
    assert git(repo, "show", f"orchard/{result.run_id}/integration:api.txt") == "api-on:x"


def test_workstreams_directory_with_tracks_runs_a_track_in_order(repo: Path, tmp_path: Path) -> None:
    ws = tmp_path / "workstreams"
    ws.mkdir()
    (ws / "orchard.yaml").write_text(SETTINGS)
    # ws-a and ws-c meet at a barrier: outside the track, ws-c runs alongside ws-a
    for wid, prompt in (("ws-a", "@barrier ac 2\n@write a.txt a"), ("ws-b", "@write b.txt b"),
                        ("ws-c", "@barrier ac 2\n@write c.txt c")):
        (ws / f"{wid}.json").write_text(json.dumps({"id": wid, "name": wid.upper(), "prompt": prompt}))
    (ws / "tracks.json").write_text(json.dumps({"lane": ["ws-a", "ws-b"]}))
    seen: list[str] = []
    result = orchard.run(ws, repo=repo, on_event=lambda e: seen.append(e.type))
    assert result.exit_code == 0
    events = journal(repo)
    started = {e["task"]: i for i, e in enumerate(events) if e["type"] == "attempt.started"}
    finished = {e["task"]: i for i, e in enumerate(events) if e["type"] == "task.status" and e["status"] == "merged"}
    assert finished["ws-a"] < started["ws-b"]  # one at a time, in the track's order
    assert started["ws-c"] < finished["ws-a"]  # outside the track: runs alongside
    assert "run.finished" in seen
    log = git(repo, "log", "--format=%s", f"orchard/{result.run_id}/integration")
    assert "orchard: merge task ws-b" in log
