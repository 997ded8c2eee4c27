"""Random command lines: every one ends in a clean exit code (0, 1, 2 or 3) with a message, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchard.cli import main
from tests.conftest import init_repo

COMMANDS = ["plan", "run", "resume", "retry", "status", "logs", "cancel", "clean", "land", "doctor", "--help",
            "nonsense", "-C"]
TOKENS = st.sampled_from(["--json", "--parallel", "-j", "0", "-1", "3", "--base", "HEAD", "main", "--land", "--run",
                          "--attempt", "x", "--follow", "--all", "--branches", "--min-free-disk", "1PB", "abc",
                          "--max-worktrees-size", "plan.yaml", "missing.yaml", "-C", "/nonexistent", ".", "--",
                          "-", "--version", "é", "a b", "--no-such-flag", "[bold]x", "\t", "\0"]) | st.text(max_size=12)


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A plain directory and a repository with a broken plan in it."""
    plain = tmp_path_factory.mktemp("plain")
    repo = init_repo(tmp_path_factory.mktemp("r") / "repo", {"plan.yaml": "tasks:\n  - {id: a, promt: x}\n"})
    return {"plain": plain, "repo": repo}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(["plain", "repo"]), command=st.sampled_from(COMMANDS),
       args=st.lists(TOKENS, max_size=5))
def test_random_command_lines_exit_cleanly(places: dict[str, Path], where: str, command: str, args: list[str],
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(places[where])
    if command == "doctor" or "doctor" in args:
        args = [a for a in args if a != "doctor"]
    with pytest.raises(SystemExit) as exit_info:
        main([command, *args])
    code = exit_info.value.code
    out, err = capsys.readouterr()
    assert code in (0, 1, 2, 3), (command, args, code, err)
    assert "Traceback" not in err and "Traceback" not in out
    if code in (2, 3):
        assert err.strip(), "an error exit must say why"
