"""Output that cannot attack the terminal, and secrets caught by their format: the sanitiser and the redactor on
their own, every human view of a run (dashboard, plain lines, status, summary, logs), and a real `orchard run` whose
agent prints escape sequences, an Anthropic-shaped key and a URL with a password."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

import orchard
from orchard.cli import main
from orchard.cli.inspect_cmds import LogOutput
from orchard.core.events import AgentActivity, AttemptFinished, AttemptStarted, RunNote, RunStarted, TaskStatusChanged
from orchard.core.model import Outcome, TaskStatus
from orchard.core.redact import FORMATS, NO_REDACTION, Redactor
from orchard.core.safe_text import safe_line, safe_text
from orchard.ui.dashboard import render
from orchard.ui.lines import NdjsonLines, PlainLines
from orchard.ui.report import status_table, summary_text
from orchard.ui.snapshot import Snapshot
from tests.conftest import PYTHON, git, merged_tasks, run_orchard
from tests.test_engine_acceptance import plan_text, task
from tests.test_security import last_run

ESC = "\x1b"
# what terminals obey: cursor moves, clearing, OSC 8 hyperlinks, OSC 52 clipboard writes, 8-bit CSI, bare C0 controls
HOSTILE = (f"{ESC}[2J{ESC}[H{ESC}[5A {ESC}]8;;http://evil{ESC}\\text{ESC}]8;;{ESC}\\ {ESC}]52;c;aGVsbG8=\x07"
           " \r\x08\x7f\x9b31m \u202eevil")
SGR = re.compile(r"\x1b\[[0-9;]*m")  # the colours rich itself writes

# ---- the sanitiser ----------------------------------------------------------------------------------------------

SHOWN = [
    ("\x1b[2J", "\\x1b[2J"),
    ("\x1b[H\x1b[5A", "\\x1b[H\\x1b[5A"),
    ("\x1b]8;;http://evil\x1b\\text\x1b]8;;\x1b\\", "\\x1b]8;;http://evil\\x1b\\text\\x1b]8;;\\x1b\\"),
    ("\x1b]52;c;QkFTRTY0\x07", "\\x1b]52;c;QkFTRTY0\\x07"),
    ("a\rb", "a\\rb"),
    ("a\x08b\x7fc", "a\\x08b\\x7fc"),
    ("\x9b31m \x9d0;title\x9c", "\\x9b31m \\x9d0;title\\x9c"),
    ("\x00\x05", "\\x00\\x05"),
    ("file\u202etxt.exe\u2066", "file\\u202etxt.exe\\u2066"),
]


@pytest.mark.parametrize(("raw", "shown"), SHOWN)
def test_controls_are_shown_not_obeyed(raw: str, shown: str) -> None:
    assert safe_line(raw) == shown
    assert safe_text(raw) == shown


def test_lines_show_tab_and_newline_and_texts_keep_them() -> None:
    assert safe_line("a\tb\nc") == "a\\tb\\nc"
    assert safe_text("a\tb\nc\r\n") == "a\tb\nc\\r\n"


@pytest.mark.parametrize("text", ["", "plain ascii", "ünïcødé ✓ 漢字 🙂", "[bold]not markup[/bold] [link=x]y",
                                  "back\\x1bslash", "no\u00a0break space"])
def test_printable_text_is_unchanged(text: str) -> None:
    assert safe_line(text) == text and safe_text(text) == text


def _unsafe(char: str, keep: str = "") -> bool:
    return char not in keep and (unicodedata.category(char) == "Cc" or "\u202a" <= char <= "\u202e"
                                 or "\u2066" <= char <= "\u2069")


@given(st.text())
@settings(max_examples=500)
def test_sanitised_text_has_no_controls_and_is_stable(text: str) -> None:
    line, multi = safe_line(text), safe_text(text)
    assert not any(_unsafe(c) for c in line)
    assert not any(_unsafe(c, keep="\t\n") for c in multi)
    assert safe_line(line) == line and safe_text(multi) == multi
    assert len(line) >= len(multi) >= len(text)  # escapes are added, nothing is dropped


# ---- every human view ---------------------------------------------------------------------------------------------

def _terminal(renderable: object) -> str:
    """What a colour terminal would receive, with rich's own colour codes removed."""
    buffer = io.StringIO()
    Console(file=buffer, width=300, force_terminal=True, color_system="truecolor", markup=True).print(renderable)
    return SGR.sub("", buffer.getvalue())


def _assert_inert(out: str) -> None:
    assert not any(_unsafe(c, keep="\n") for c in out), repr(out)


def test_dashboard_shows_escapes_and_markup_as_text() -> None:
    snap, now = Snapshot(), time.time()
    snap.apply(RunStarted(run_id="r1", ts=now, base="main", base_commit="0" * 40, integration_branch="i", tasks=1,
                          parallel=1))
    snap.apply(AttemptStarted(run_id="r1", ts=now, task="t", attempt=1, agent="fake", branch="b", worktree="w",
                              start_commit="0" * 40))
    snap.apply(TaskStatusChanged(run_id="r1", ts=now, task="t", status=TaskStatus.RUNNING, attempt=1))
    snap.apply(AgentActivity(run_id="r1", ts=now, task="t", attempt=1, text=HOSTILE + " [link=http://evil]x[/link]"))
    snap.apply(RunNote(run_id="r1", ts=now, text=f"note {ESC}[2J"))
    out = _terminal(render(snap, now + 1))
    _assert_inert(out)
    assert "\\x1b[2J\\x1b[H" in out and "[link=http://evil]x[/link]" in out and "note \\x1b[2J" in out


def test_status_table_and_summary_show_escapes_as_text() -> None:
    doc = {"run": {"id": "r1", "status": "failed", "integration_branch": "i"},
           "tasks": [{"id": "t", "status": "failed", "agent": f"fake{ESC}[2J", "attempts": 1, "duration_s": 1.0,
                      "cost_usd": 0.0, "error": f"exited with code 3: {HOSTILE}\nsecond line"}]}
    out = _terminal(status_table(doc))
    _assert_inert(out)
    assert "\\x1b]52;c;" in out and "fake\\x1b[2J" in out and "second line" in out
    agents = {f"a{ESC}[2J": {"attempts": 1, "cost_usd": 0.5, "tokens_in": 1, "tokens_out": 1},
              "b": {"attempts": 1, "cost_usd": 0.0, "tokens_in": 0, "tokens_out": 0}}
    summary = {"run_id": "r1", "status": "failed", "counts": {"failed": 1}, "merged": 0, "tasks": 1, "attempts": 1,
               "wall_s": 1.0, "work_s": 1.0, "speedup": 1.0, "utilization": 1.0, "parallel": 1, "cost_usd": 0.5,
               "tokens_in": 1, "tokens_out": 1, "agents": agents}
    out = _terminal(summary_text(summary))
    _assert_inert(out)
    assert "a\\x1b[2J: 1 attempts" in out


def test_plain_lines_show_escapes_and_ndjson_stays_exact() -> None:
    event = AttemptFinished(run_id="r1", ts=time.time(), task="t", attempt=1, outcome=Outcome.AGENT_ERROR,
                            exit_code=3, detail=f"exited with code 3: {HOSTILE}\nnext")
    plain, ndjson = io.StringIO(), io.StringIO()
    PlainLines(plain)(event)
    NdjsonLines(ndjson)(event)
    _assert_inert(plain.getvalue())
    assert "\\x1b[2J" in plain.getvalue() and "\\r\\x08" in plain.getvalue() and " | next" in plain.getvalue()
    assert json.loads(ndjson.getvalue())["detail"] == event.detail
    assert ESC not in ndjson.getvalue()  # JSON escapes control characters itself


def test_error_messages_show_escapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An error may quote a path or git's output, which an agent can shape."""
    with pytest.raises(SystemExit) as exit_info:
        main(["-C", str(tmp_path / f"missing{ESC}]52;c;aGVsbG8=\x07"), "status"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 3 and "missing\\x1b]52;c;aGVsbG8=\\x07" in err
    _assert_inert(err)


def test_log_output_decodes_across_reads(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """A character split between two reads of a growing log stays one; a byte that is not UTF-8 is shown."""
    out = LogOutput(raw=False)
    for chunk in (b"caf\xc3", b"\xa9 \x1b[2J\xc2", b"\x9b \xff\tend\n\xe2\x9c"):
        out.write(chunk)
    out.write(b"", final=True)
    assert capsysbinary.readouterr().out.decode() == "café \\x1b[2J\\x9b \\xff\tend\n\\xe2\\x9c"
    raw = LogOutput(raw=True)
    raw.write(b"\x1b[2J\xff")
    assert capsysbinary.readouterr().out == b"\x1b[2J\xff"


# ---- secrets by format -------------------------------------------------------------------------------------------

ANTHROPIC = "sk-ant-api03-" + "Zx9_a-" * 15 + "AA"
OPENAI_PROJECT = "sk-proj-" + "Ab3_-" * 10
OPENAI_LEGACY = "sk-" + "T3BlbkFJ" * 6
GITHUB = "ghp_" + "a1B2" * 9
AWS = "AKIAIOSFODNN7EXAMPLE"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
CASES = [
    (ANTHROPIC, "anthropic-key"),
    (OPENAI_PROJECT, "openai-key"),
    ("sk-svcacct-" + "x" * 30, "openai-key"),
    (OPENAI_LEGACY, "openai-key"),
    (GITHUB, "github-token"),
    ("gho_" + "Z" * 36, "github-token"),
    ("ghs_" + "9" * 36, "github-token"),
    ("ghu_" + "q" * 36, "github-token"),
    ("ghr_" + "R7" * 18, "github-token"),
    ("github_pat_11ABCDEFG0" + "x" * 12 + "_" + "y" * 59, "github-token"),
    (AWS, "aws-access-key-id"),
    ("ASIA" + "Q" * 16, "aws-access-key-id"),
    ("xoxb-1234567890-abcdefghij", "slack-token"),
    ("xoxp-12-34-56-abcdef", "slack-token"),
    (JWT, "jwt"),
]


@pytest.mark.parametrize(("secret", "label"), CASES, ids=[label for _, label in CASES])
def test_credentials_are_caught_by_format(secret: str, label: str) -> None:
    redact = Redactor({})
    for text in (secret, f"key={secret}", f'"{secret}"', f"Bearer {secret}\n", f"({secret}),"):
        out = redact(text)
        assert secret not in out and f"[REDACTED:{label}]" in out, out
        assert redact.bytes(text.encode()) == out.encode()


@pytest.mark.parametrize(("url", "shown"), [
    ("https://bob:hunter22secret@example.com/x", "https://bob:[REDACTED:url-password]@example.com/x"),
    ("postgres://app:p%40ss:w0rd@db:5432/prod", "postgres://app:[REDACTED:url-password]@db:5432/prod"),
    ("redis://:only-a-password@cache", "redis://:[REDACTED:url-password]@cache"),
    ("clone git+ssh://me:pw@host/r.git now", "clone git+ssh://me:[REDACTED:url-password]@host/r.git now"),
])
def test_a_urls_password_is_redacted_and_the_rest_kept(url: str, shown: str) -> None:
    assert Redactor({})(url) == shown
    assert Redactor({}).bytes(url.encode()) == shown.encode()


ORDINARY = [
    "sk-learn", "task-1", "pip install sk-learn scikit-learn", "task-" + "a1" * 20, "disk-" + "b" * 40,
    "ask-" + "c" * 40, "sk-short-words-joined-by-many-hyphens-here", "ghost_writer", "gh_pages", "ghp_short",
    "github_pat_", "AKIA" + "A" * 15, "AKIA" + "A" * 17, "MASIA" + "B" * 16, "ASIAN markets", "xoxo-gossip",
    "xoxb-short", "eyJ", "eyJhbGciOiJIUzI1NiJ9", "header.eyJ.x", "http://localhost:8080/path", "http://host:8080/a@b",
    "https://example.com/?q=a:b@c", "git@github.com:org/repo.git", "ssh://git@github.com/org/repo", "user@example.com",
    "http://[::1]:8080/", "mailto:me@example.com", "time 12:30:45 @ noon", "3f2a9c1e0b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39",
    "orchard/20240101-120000-abcdef/task/task-1", "https://bob@example.com/x",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_words_are_left_alone(text: str) -> None:
    assert Redactor({})(text) == text and Redactor({}).bytes(text.encode()) == text.encode()


def test_named_secrets_label_by_name_and_formats_by_format() -> None:
    redact = Redactor({"DEPLOY_TOKEN": GITHUB, "SHORT": "12345"})
    assert redact(f"{GITHUB} {ANTHROPIC} 12345") == "[REDACTED:DEPLOY_TOKEN] [REDACTED:anthropic-key] 12345"
    assert NO_REDACTION(ANTHROPIC) == ANTHROPIC and NO_REDACTION.bytes(AWS.encode()) == AWS.encode()
    assert Redactor({}, formats=())(ANTHROPIC) == ANTHROPIC


def test_every_format_is_pinned_by_a_case() -> None:
    assert {f.label for f in FORMATS} == {label for _, label in CASES} | {"url-password"}


_SECRETS = st.sampled_from([s for s, _ in CASES] + ["https://u:pw0rd@h.example", "value-of-the-env-secret"])
_FILLER = st.text(st.characters(codec="utf-8"), max_size=12)


@given(st.lists(st.one_of(_SECRETS, _FILLER), max_size=12).map(" ".join))
@settings(max_examples=300)
def test_redaction_catches_every_secret_and_is_idempotent(text: str) -> None:
    redact = Redactor({"SERVICE_TOKEN": "value-of-the-env-secret"})
    once = redact(text)
    assert redact(once) == once
    assert redact.bytes(text.encode()) == once.encode()
    for secret, _ in CASES:
        assert secret not in once
    assert "value-of-the-env-secret" not in once and "pw0rd" not in once


# ---- a real run ------------------------------------------------------------------------------------------------

KEY = "sk-ant-api03-" + "Zx9" * 30
PASSWORD = "hunter22secret"
URL = f"https://bob:{PASSWORD}@example.com/x"
# The agent builds its secrets at run time, so that neither the plan nor its prompt (both kept in state.db) holds
# them: whatever of them is found later came from the agent's output.
ESCAPING_AGENT = """import os, pathlib, sys
ESC = chr(27)
key = "sk-ant-api03-" + "Zx9" * 30
url = "https://bob:" + "hunter22" + "secret@example.com/x"
print(ESC + "[2J" + ESC + "[H" + ESC + "[5Aworking " + ESC + "]8;;http://evil" + ESC + "\\\\click" + ESC + "]8;;"
      + ESC + "\\\\ " + ESC + "]52;c;aGVsbG8=" + chr(7), flush=True)
print("using " + key + " and " + url + chr(13) + "x" + chr(8) + chr(127) + chr(0x9b) + "31m", flush=True)
pathlib.Path(os.environ["ORCHARD_TASK_ID"] + ".txt").write_text("done\\n")
if os.environ["ORCHARD_TASK_ID"] == "bad":
    print(ESC + "[2J" + "failed with " + key + " at " + url, file=sys.stderr, flush=True)
    sys.exit(3)
"""


def _assert_clean(text: str, what: str) -> None:
    assert ESC not in text and "\x9b" not in text and "\x07" not in text, f"{what}: {text!r}"
    assert KEY not in text and PASSWORD not in text, f"{what}: {text!r}"


def test_a_run_whose_agent_prints_escapes_and_secrets(repo: Path, tmp_path: Path) -> None:
    script = tmp_path / "escaping_agent.py"
    script.write_text(ESCAPING_AGENT)
    plan = tmp_path / "plan.yaml"
    plan.write_text(f'defaults: {{retries: 0}}\nagents:\n  a: {{type: command, command: ["{PYTHON}", "{script}"]}}\n'
                    "tasks:\n  - {id: ok, prompt: go}\n  - {id: bad, prompt: go}\n")
    run = run_orchard("run", str(plan), cwd=repo)
    assert run.code == 1, run.err
    _assert_clean(run.out + run.err, "run")
    assert "\\x1b[2Jfailed with [REDACTED:anthropic-key] at https://bob:[REDACTED:url-password]@" in run.out

    status = run_orchard("status", cwd=repo)
    _assert_clean(status.out + status.err, "status")
    assert "\\x1b[2J" in status.out and "[REDACTED:anthropic-key]" in status.out

    for task_id in ("ok", "bad"):
        logs = run_orchard("logs", task_id, cwd=repo)
        assert logs.code == 0, logs.err
        _assert_clean(logs.out, f"logs {task_id}")
        assert "\\x1b]8;;http://evil\\x1b\\click" in logs.out and "\\x1b]52;c;aGVsbG8=\\x07" in logs.out
        assert "[REDACTED:url-password]@example.com/x\\rx\\x08\\x7f\\x9b31m" in logs.out
        raw = run_orchard("logs", task_id, "--raw", cwd=repo)
        assert f"{ESC}[2J{ESC}[H{ESC}[5Aworking" in raw.out and f"{ESC}]52;c;aGVsbG8=\x07" in raw.out
        assert "\x9b31m" in raw.out and KEY not in raw.out and PASSWORD not in raw.out  # the file itself is redacted

    orchard_dir = repo / ".orchard"
    stored = b"".join(p.read_bytes() for p in orchard_dir.rglob("*") if p.is_file() and "git" not in p.parts)
    assert KEY.encode() not in stored and PASSWORD.encode() not in stored
    with sqlite3.connect(orchard_dir / "state.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        cells = [str(v) for t in tables for row in db.execute(f'SELECT * FROM "{t}"') for v in row]
    assert cells and not any(KEY in c or PASSWORD in c for c in cells)
    messages = git(repo, "log", "--format=%B", "orchard/" + last_run(repo) + "/integration")
    assert "Orchard-Task: ok" in messages and KEY not in messages and PASSWORD not in messages


def test_merge_titles_never_carry_a_secret(repo: Path, write_plan: Callable[[str], Path]) -> None:
    """A title that held a secret, even one the cut to 72 characters would have split, is just `task <id>`."""
    long_line = "make the deploy script read its connection string: " + URL  # the cut falls in the password
    tasks = (task("named", "@write named.txt n", f'    name: "rotate {ANTHROPIC}"\n')
             + task("long", f"{long_line}\n@write long.txt l")
             + task("plain", "add the plain file\n@write plain.txt p"))
    result = orchard.run(write_plan(plan_text(tasks)), repo=repo)
    assert result.exit_code == 0
    titles = {}
    for commit, task_id in merged_tasks(repo, f"orchard/{result.run_id}/integration"):
        titles[task_id] = git(repo, "log", "-1", "--format=%b", commit).strip().splitlines()[0]
    assert titles == {"named": "task named", "long": "task long", "plain": "add the plain file"}

