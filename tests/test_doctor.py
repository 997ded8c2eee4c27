"""`orchard doctor`: finds agent binaries on PATH, reads their versions, checks credentials, exits 3 when a plan's
agent is unusable."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tests.conftest import run_orchard


def fake_binary(bin_dir: Path, name: str, version: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\necho '{version}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_doctor_reports_versions_credentials_and_install_hints(repo: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_binary(bin_dir, "claude", "2.1.330 (Claude Code)")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "ANTHROPIC_API_KEY": "sk-test", "OPENAI_API_KEY": "",
           "CODEX_API_KEY": ""}
    result = run_orchard("doctor", "--json", cwd=repo, env=env)
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["git"]["ok"] and report["git"]["version"].startswith("2.")
    agents = {a["kind"]: a for a in report["agents"]}
    assert agents["claude"]["ok"] and agents["claude"]["version"] == "2.1.330 (Claude Code)"
    assert agents["claude"]["credentials"] == ["ANTHROPIC_API_KEY"]
    assert not agents["codex"]["ok"] and agents["codex"]["path"] is None
    assert "npm install -g @openai/codex" in agents["codex"]["install"]
    human = run_orchard("doctor", cwd=repo, env=env)
    assert "claude: ✓ 2.1.330" in human.out and "install: npm install -g @openai/codex" in human.out


def test_doctor_with_a_plan_checks_only_its_agents_and_fails_when_unusable(repo: Path, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("agents:\n  cx: {type: codex, binary: my-codex}\ntasks:\n  - {id: a, prompt: hi}\n")
    result = run_orchard("doctor", str(plan), "--json", cwd=repo, env={"PATH": os.environ["PATH"]})
    assert result.code == 3
    report = json.loads(result.out)
    assert [(a["kind"], a["binary"]) for a in report["agents"]] == [("codex", "my-codex")]
    assert "Traceback" not in result.err


def test_doctor_says_when_codex_cannot_run_its_own_bubblewrap(repo: Path, tmp_path: Path) -> None:
    """codex installed in $TMPDIR (its sandbox lets commands write there, so codex skips a bwrap there): fine while
    orchard's cache for a copy lies elsewhere; with the cache in $TMPDIR too, doctor says what codex will do."""
    npm = tmp_path / "npm" / "node_modules"
    resources = npm / "@openai" / "codex-linux-x64" / "vendor" / "x86_64" / "codex-resources"
    resources.mkdir(parents=True)
    (npm / ".bin").mkdir()
    fake_binary(npm / ".bin", "codex", "codex-cli 0.169.0")
    fake_binary(resources, "bwrap", "bubblewrap 0.11.0")
    env = {"PATH": f"{npm / '.bin'}:/usr/bin:/bin", "CODEX_API_KEY": "test-key", "TMPDIR": str(tmp_path / "npm")}

    def codex_notes(cache: Path) -> str:
        result = run_orchard("doctor", "--json", cwd=repo, env={**env, "XDG_CACHE_HOME": str(cache)})
        assert result.code == 0, result.err
        codex = next(a for a in json.loads(result.out)["agents"] if a["kind"] == "codex")
        assert codex["ok"] and codex["version"] == "codex-cli 0.169.0"
        return str(codex["notes"])

    assert codex_notes(tmp_path / "cache") == ""
    notes = codex_notes(tmp_path / "npm" / "cache")
    assert str(resources) in notes and "every file write fails" in notes and "install codex elsewhere" in notes
