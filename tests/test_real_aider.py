"""The real aider (0.86.2, pinned in tools/aider/requirements.txt) against the fake model server's Chat Completions.

aider comes from `bash tools/install-aider.sh` (its own venv at .tools/aider/venv); when it is missing these tests
fail, on purpose. Offline: HOME is a temp dir holding `.aider.model.metadata.json` for `openai/fake-model` (context
window and prices, so aider never downloads litellm's price list), `LITELLM_LOCAL_MODEL_COST_MAP=True`,
`--no-check-update`, `--analytics-disable`; `OPENAI_API_BASE=<server>/v1`, `OPENAI_API_KEY=test-key`.

Costs: one aider run takes 7-10 s here (importing litellm is most of it). Aider retries retryable API errors (429,
5xx, broken streams) itself, sleeping 0.25, 0.5, 1 … 32 s (`RETRY_TIMEOUT = 60` in aider/models.py, no flag or
variable): about 64 s and 9 requests, 27 with the openai SDK's own two retries each, before it gives up and exits 0.
The 429 tests therefore run aider through `fast_retries`, a launcher that imports aider, cuts that constant to 0.5 s
(3 requests, 0.75 s of sleep) and calls `aider.main.main`, and their 429s carry `x-should-retry: false` (the openai
SDK then does not retry by itself).

The smoke tests compare aider's stdout with tests/transcripts/aider/*.txt (token and cost figures masked: when
streaming, aider counts tokens itself); `ORCHARD_RECORD_TRANSCRIPTS=1` rewrites those files and their
tests/transcripts/manifest.json entries instead, from stable paths under $TMPDIR/orchard-transcripts/aider-NAME.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

import orchard
from orchard.agents import AttemptContext, AttemptReport, ExitInfo, adapter_for
from orchard.core.model import AgentSpec, Outcome, Task
from orchard.testing import FakeModelServer, Usage, edit_file, error, run, step, text, write_file
from orchard.testing.agents import clean_environ
from orchard.testing.script import Script
from tests.conftest import git, init_repo, run_orchard

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".tools" / "aider" / "venv"
VERSION = "0.86.2"
MODEL = "openai/fake-model"
PRICES = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}  # $1 / $2 per million tokens
TIMEOUT = 60.0  # wall clock per aider run
TRANSCRIPTS = Path(__file__).parent / "transcripts"
RECORD = os.environ.get("ORCHARD_RECORD_TRANSCRIPTS") == "1"
NO_SDK_RETRY = {"x-should-retry": "false"}  # the openai SDK's own retries would add 2 requests per aider attempt
LEAKY = ("AIDER_", "LITELLM_", "COLUMNS", "LINES")  # beyond clean_environ's: user config, terminal width
LAUNCHER = '''#!{python}
"""aider with its fixed retry budget (aider.models.RETRY_TIMEOUT, 60 s) cut to {seconds} s: for tests only."""
import sys

import aider.coders.base_coder
import aider.models

aider.models.RETRY_TIMEOUT = aider.coders.base_coder.RETRY_TIMEOUT = {seconds}

from aider.main import main

sys.exit(main())
'''
SUCCESS: Script = [step(edit_file("notes.txt", "hello wrld", "hello world"), write_file("copy.txt", "hello world\n"),
                        text("Fixed the greeting and copied the file."), usage=Usage(800, 40))]
SMOKE: dict[str, tuple[str, Script]] = {
    "success": ("diff edit of notes.txt (in the chat) and a new copy.txt in one reply; exit 0", SUCCESS),
    "rate_limit": ("HTTP 429 rate_limit_exceeded (x-should-retry: false) with aider's retry budget cut to 0.5 s: "
                   "3 attempts, then exit 0", [error(429, headers=NO_SDK_RETRY)]),
    "auth": ("HTTP 401 invalid_api_key: not retried, exit 0", [error(401)]),
}
PROMPT = "Fix the greeting in notes.txt and copy it to copy.txt. [[script:{key}]]\n"


@pytest.fixture(autouse=True)
def _no_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the test's own variables may point aider anywhere: the fake server on loopback."""
    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "CLAUDE_", "OPENAI_", "CODEX_", "GEMINI_", "GOOGLE_", *LEAKY)):
            monkeypatch.delenv(name)


@pytest.fixture
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as fake:
        yield fake


def aider_binary() -> Path:
    """The pinned aider, or a failure telling how to install it."""
    path = VENV / "bin" / "aider"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"aider is not installed at {path}: run `bash tools/install-aider.sh` (pinned aider-chat "
                    f"{VERSION} into .tools/aider/venv)")
    return path


def fast_retries(seconds: float = 0.5) -> Path:
    """A launcher running the pinned aider with its retry budget cut to `seconds` (see the module docstring).

    It lives beside aider's venv, not in the test's temp dir: its `#!` names the venv's python, and orchard's
    sandbox (whose /tmp is private) binds back the part of /tmp a command lives in, not its interpreter's, so with
    the checkout under /tmp a launcher elsewhere could not start ("No such file or directory")."""
    aider_binary()
    path = VENV.parent / "launchers" / f"retries-{seconds}s" / "aider-fast-retries"
    text = LAUNCHER.format(python=VENV / "bin" / "python", seconds=seconds)
    if not (path.is_file() and path.read_text() == text):  # written once, atomically: tests may run side by side
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        staged.write_text(text)
        staged.chmod(0o755)
        staged.replace(path)
    return path


def aider_home(home: Path) -> Path:
    """An empty HOME but for model metadata for `openai/fake-model` (no download of litellm's price list)."""
    home.mkdir(parents=True, exist_ok=True)
    metadata = {MODEL: {"max_input_tokens": 128000, "max_output_tokens": 8192, "max_tokens": 8192,
                        "litellm_provider": "openai", "mode": "chat", **PRICES}}
    (home / ".aider.model.metadata.json").write_text(json.dumps(metadata, indent=1))
    return home


def aider_env(server: FakeModelServer, home: Path) -> dict[str, str]:
    """The variables aider needs to talk only to `server`, offline."""
    return {"HOME": str(aider_home(home)), "OPENAI_API_BASE": server.openai_base_url, "OPENAI_API_KEY": "test-key",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def context(binary: Path, prompt_file: Path, worktree: Path, files: tuple[str, ...]) -> AttemptContext:
    """What orchard hands the aider adapter for one attempt."""
    task = Task(id="t", prompt=prompt_file.read_text(), agent="aider", files=files)
    spec = AgentSpec("aider", "aider", None, {"binary": str(binary), "model": MODEL, "edit_format": "diff"})
    return AttemptContext("run", task, 1, spec, worktree, task.prompt, prompt_file)


def replay(stdout: str, stderr: str, returncode: int) -> AttemptReport:
    """Orchard's verdict on the output, line by line as its supervisor feeds it."""
    parser = adapter_for("aider").parser(context(Path("aider"), Path(os.devnull), Path("."), ()))
    for line in stdout.splitlines():
        parser.feed(line, "stdout")
    for line in stderr.splitlines():
        parser.feed(line, "stderr")
    return parser.finish(ExitInfo(returncode))


def masked(stdout: str) -> list[str]:
    """stdout without what varies between runs: token and cost figures, the order of `Applied edit` lines."""
    out: list[str] = []
    applied: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("Applied edit to "):
            applied.append(line)
            continue
        out += sorted(applied)
        applied = []
        out.append(re.sub(r"[\d.]+k?(?= (sent|received|message|session))", "N", line))
    return out + sorted(applied)


def smoke(name: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], FakeModelServer, Path, AttemptReport]:
    """Run one SMOKE scenario with the adapter's own argv; compare with (or record) its transcript."""
    about, script = SMOKE[name]
    base = Path(tempfile.gettempdir()) / "orchard-transcripts" / f"aider-{name}" if RECORD else tmp_path / name
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    repo = init_repo(base / "repo", {"README.md": "# transcript repo\n", "notes.txt": "hello wrld\n"})
    key = f"aider-{name}"
    prompt_file = base / "prompt.md"
    prompt_file.write_text(PROMPT.format(key=key))
    binary = fast_retries() if name == "rate_limit" else aider_binary()
    invocation = adapter_for("aider").invocation(context(binary, prompt_file, repo, ("notes.txt",)))
    with FakeModelServer({key: script}) as server:
        added = {**aider_env(server, base / "home"), **invocation.env}
        env = {k: v for k, v in clean_environ().items() if not k.startswith(LEAKY)} | added
        started = time.monotonic()
        result = subprocess.run(invocation.argv, cwd=invocation.cwd, env=env, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=TIMEOUT)
        seconds = round(time.monotonic() - started, 2)
    report = replay(result.stdout, result.stderr, result.returncode)
    target = TRANSCRIPTS / "aider" / f"{name}.txt"
    if RECORD:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(result.stdout)
        record(name, about, script, invocation.argv, added, repo, result, server, seconds)
    else:
        assert target.exists(), f"no {target}: record it with ORCHARD_RECORD_TRANSCRIPTS=1"
        assert masked(result.stdout) == masked(target.read_text())
    return result, server, repo, report


def record(name: str, about: str, script: Script, argv: tuple[str, ...], env: dict[str, str], repo: Path,
           result: subprocess.CompletedProcess[str], server: FakeModelServer, seconds: float) -> None:
    """Write the transcript's manifest entry, shaped like orchard.testing.record's."""
    manifest_path = TRANSCRIPTS / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest[f"aider/{name}.txt"] = {
        "about": about, "cwd": str(repo), "argv": [Path(argv[0]).name, *argv[1:]], "env": env,
        "prompt": PROMPT.format(key=f"aider-{name}"), "exit_code": result.returncode, "killed_after_seconds": None,
        "seconds": seconds, "server_port": server.port,
        "server_usage": asdict(server.usage_reported.get(f"aider-{name}", Usage())),
        "server_requests": [f"{r.method} {r.path} step={r.step} -> {r.status} {r.reply}" for r in server.requests],
        "script": [repr(s) for s in script], "stderr_tail": result.stderr.strip().splitlines()[-3:]}
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")


def test_aider_edits_files_with_the_adapters_argv(tmp_path: Path) -> None:
    result, server, repo, report = smoke("success", tmp_path)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    assert (repo / "notes.txt").read_text() == "hello world\n"
    assert (repo / "copy.txt").read_text() == "hello world\n"
    (request,) = server.requests_for("aider-success")
    assert (request.method, request.path, request.step, request.reply) == ("POST", "/v1/chat/completions", 0, "json")
    assert request.body["model"] == "fake-model" and not request.body.get("stream")  # the adapter's --no-stream
    assert request.headers["authorization"] == "Bearer test-key"
    assert server.problems == [] and [r.path for r in server.requests] == ["/v1/chat/completions"]
    lines = result.stdout.splitlines()
    assert f"Aider v{VERSION}" in lines and f"Model: {MODEL} with diff edit format" in lines
    assert {"Applied edit to notes.txt", "Applied edit to copy.txt"} <= set(lines)
    assert report.outcome is Outcome.SUCCESS, report.detail
    assert sorted(report.detail.removeprefix("applied edits to ").split(", ")) == ["copy.txt", "notes.txt"]
    # Not streaming, aider reports the provider's own token counts, priced from the metadata.
    usage = server.usage_reported["aider-success"]
    assert (report.tokens_in, report.tokens_out) == (usage.input_tokens, usage.output_tokens) and report.cost_usd > 0
    assert not (repo / ".gitignore").exists()  # --no-gitignore: aider leaves the task's .gitignore alone


@pytest.mark.parametrize(("name", "status", "attempts", "outcome", "says"), [
    ("rate_limit", 429, 3, Outcome.RATE_LIMITED, "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit "
                                                 "reached for"),
    ("auth", 401, 1, Outcome.AUTH, "litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect "),
], ids=["rate_limit", "auth"])
def test_aider_exits_0_on_api_errors_and_orchard_reads_them(tmp_path: Path, name: str, status: int, attempts: int,
                                                            outcome: Outcome, says: str) -> None:
    result, server, repo, report = smoke(name, tmp_path)
    assert result.returncode == 0  # aider's --message mode prints API errors and exits 0
    assert [r.status for r in server.requests_for(f"aider-{name}")] == [status] * attempts
    assert [r.step for r in server.requests_for(f"aider-{name}")] == [0] * attempts
    assert (repo / "notes.txt").read_text() == "hello wrld\n" and not (repo / "copy.txt").exists()
    lines = result.stdout.splitlines()
    assert sum(line.startswith(says) for line in lines) == attempts  # COLUMNS=1000: one message, one line
    assert [line for line in lines if line.startswith("Retrying in")] == [
        "Retrying in 0.2 seconds...", "Retrying in 0.5 seconds..."][:attempts - 1]
    assert not [line for line in lines if line.startswith(("Tokens:", "Applied edit"))]
    assert report.outcome is outcome, report.detail
    assert report.detail.startswith(says.strip())
    if outcome is Outcome.RATE_LIMITED:  # unwrapped, "Please try again in 1s." is read
        assert report.resume_at is not None


def entry(server: FakeModelServer, home: Path, **extra: Any) -> dict[str, Any]:
    """A plan agent entry running the real aider against `server`."""
    return {"type": "aider", "binary": str(aider_binary()), "model": MODEL, "edit_format": "diff",
            "env": aider_env(server, home), "rate_limit_backoff": "1s", "stall_timeout": "30s", **extra}


def write_plan(tmp_path: Path, agent: dict[str, Any], tasks: list[dict[str, Any]]) -> Path:
    plan = {"parallel": 2, "defaults": {"agent": "aider", "retries": 0, "timeout": "2m"},
            "agents": {"aider": agent}, "tasks": tasks}
    path = tmp_path / "plan.yaml"
    path.write_text(json.dumps(plan, indent=1))  # JSON is YAML
    return path


def status(repo: Path) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in run_orchard("status", "--json", cwd=repo).json()["tasks"]}


def journal(repo: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        return [json.loads(r[0]) for r in db.execute("SELECT data FROM events ORDER BY id")]


def test_dependent_plan_merges_aiders_edits_with_exact_tokens_and_cost(
        server: FakeModelServer, repo: Path, tmp_path: Path) -> None:
    """`--no-stream` (the entry's `args`) makes aider print the usage the server reported, so the figures are exact."""
    server.add_script("create", [step(write_file("notes.txt", "hello wrld\n"), text("Created notes.txt."),
                                      usage=Usage(700, 30))])
    server.add_script("fix", [step(edit_file("notes.txt", "hello wrld", "hello world"), text("Fixed the greeting."),
                                   usage=Usage(900, 50))])
    tasks: list[dict[str, Any]] = [
        {"id": "create", "prompt": "Create notes.txt. [[script:create]]"},
        {"id": "fix", "prompt": "Fix the greeting in notes.txt. [[script:fix]]", "depends_on": ["create"],
         "files": ["notes.txt"]}]
    agent = entry(server, tmp_path / "aider-home", args=["--no-stream"])
    result = orchard.run(write_plan(tmp_path, agent, tasks), repo=repo)
    assert result.exit_code == 0, (status(repo), server.problems)
    assert server.problems == []
    integration = f"orchard/{result.run_id}/integration"
    assert git(repo, "show", f"{integration}:notes.txt") == "hello world\n"
    merged = git(repo, "ls-tree", "-r", "--name-only", integration).split()
    assert "notes.txt" in merged and not [name for name in merged if name.startswith(".aider.")]
    rows = status(repo)
    for task_id in ("create", "fix"):
        reported = server.usage_reported[task_id]
        assert reported.responses == 1
        row = rows[task_id]
        assert (row["status"], row["attempts"]) == ("merged", 1)
        assert (row["tokens_in"], row["tokens_out"]) == (reported.input_tokens, reported.output_tokens)
        expected = (reported.input_tokens * PRICES["input_cost_per_token"]
                    + reported.output_tokens * PRICES["output_cost_per_token"])
        assert row["cost_usd"] == pytest.approx(expected, rel=1e-9)
    fix = server.requests_for("fix")[0].body["messages"]
    assert any("hello wrld" in str(m["content"]) and "added these files" in str(m["content"]) for m in fix)


def test_auth_failure_ends_auth_without_a_retry(server: FakeModelServer, repo: Path, tmp_path: Path) -> None:
    server.add_script("locked", [error(401)])
    tasks = [{"id": "locked", "prompt": "Anything. [[script:locked]]", "retries": 3}]
    result = orchard.run(write_plan(tmp_path, entry(server, tmp_path / "aider-home"), tasks), repo=repo)
    assert result.exit_code == 1
    row = status(repo)["locked"]
    assert row["status"] == "failed" and row["attempts"] == 1 and row["error"].startswith("auth"), row
    assert [r.status for r in server.requests_for("locked")] == [401]
    outcomes = [e["outcome"] for e in journal(repo) if e["type"] == "attempt.finished"]
    assert outcomes == ["auth"]


def test_rate_limit_pauses_then_merges_after_the_limit_resets(
        server: FakeModelServer, repo: Path, tmp_path: Path) -> None:
    server.add_script("busy", [error(429, headers=NO_SDK_RETRY)])
    recover_when_paused = server.recover_when_paused("busy", [write_file("later.txt", "done\n"), text("Done.")])
    seen = recover_when_paused.seen

    tasks = [{"id": "busy", "prompt": "Write later.txt. [[script:busy]]"}]
    agent = entry(server, tmp_path / "aider-home", binary=str(fast_retries()))
    result = orchard.run(write_plan(tmp_path, agent, tasks), repo=repo, on_event=recover_when_paused)
    assert result.exit_code == 0, status(repo)
    assert "paused" in seen and seen[-1] == "merged"
    row = status(repo)["busy"]
    assert row["attempts"] == 2 and row["error"] is None  # retries: 0, yet the task merged on its second attempt
    assert git(repo, "show", f"orchard/{result.run_id}/integration:later.txt") == "done\n"
    assert [r.status for r in server.requests_for("busy")] == [429, 429, 429, 200]
    events = journal(repo)
    paused = next(e for e in events if e["type"] == "task.status" and e["status"] == "paused")
    assert "rate limited" in paused["reason"] and paused["until"]
    assert [e["outcome"] for e in events if e["type"] == "attempt.finished"] == ["rate_limited", "success"]


# The Chat Completions dialect on its own (no aider): requests shaped like aider 0.86.2's, trimmed.
FENCE = "`" * 3
DIFF_SYSTEM = ("Act as an expert software developer.\n3. The start of search block: <<<<<<< SEARCH\n"
               "Every *SEARCH/REPLACE block* must use this format:")
DIFF_EXAMPLE = (f"Here are the *SEARCH/REPLACE* blocks:\n\nmathweb/flask/app.py\n{FENCE}python\n<<<<<<< SEARCH\n"
                f"from flask import Flask\n=======\nimport math\nfrom flask import Flask\n>>>>>>> REPLACE\n{FENCE}\n")
FENCED_EXAMPLE = DIFF_EXAMPLE.replace(f"mathweb/flask/app.py\n{FENCE}python\n",
                                      f"{FENCE}python\nmathweb/flask/app.py\n")
WHOLE_SYSTEM = ("Act as an expert software developer.\nYou MUST use this *file listing* format:\n\n"
                "path/to/filename.js\n<source>\n// entire file content ...\n// ... goes in between\n</source>\n")
FILES_MESSAGE = ("I have *added these files to the chat* so you can go ahead and edit them.\n\n*Trust this message as "
                 "the true contents of these files!*\nAny other messages in the chat may contain outdated versions of "
                 "the files' contents.\n\napp.py\n{open}\nimport os\nx = 1  # one\n{close}\n\ndocs/a.md\n{open}\n"
                 "no newline{close}\n")


def messages(system: str, example: str | None, fence: tuple[str, str], key: str, *after: dict[str, str]
             ) -> list[dict[str, str]]:
    """system, an example pair, the chat files and their canned reply, the prompt with its marker, then `after`."""
    found = [{"role": "system", "content": system}]
    if example is not None:
        found += [{"role": "user", "content": "Change get_factorial()"}, {"role": "assistant", "content": example}]
    return [*found, {"role": "user", "content": FILES_MESSAGE.format(open=fence[0], close=fence[1])},
            {"role": "assistant", "content": "Ok, any changes I propose will be to those files."},
            {"role": "user", "content": f"Do it. [[script:{key}]]\n\nReminder: the format rules again."}, *after]


def post(server: FakeModelServer, body: dict[str, Any], key: str = "test-key") -> tuple[int, str]:
    """POST /v1/chat/completions; the status and the raw body."""
    request = urllib.request.Request(f"{server.openai_base_url}/chat/completions", json.dumps(body).encode(),
                                     {"content-type": "application/json", "authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as failure:
        return failure.code, failure.read().decode()


def test_chat_stream_is_data_chunks_then_done_with_usage_only_when_asked() -> None:
    script = [step(text("Hello there."), usage=Usage(321, 12, cache_read_input_tokens=100))]
    with FakeModelServer({"s": script}) as fake:
        body = {"model": "fake-model", "stream": True, "messages": messages(DIFF_SYSTEM, DIFF_EXAMPLE, ("```",) * 2,
                                                                            "s")}
        status_code, plain = post(fake, body)
        _, with_usage = post(fake, {**body, "stream_options": {"include_usage": True}})
        assert fake.problems == [] and [r.step for r in fake.requests_for("s")] == [0, 0]
    assert status_code == 200
    frames = [f for f in plain.split("\n\n") if f]
    assert all(f.startswith("data: ") and "\n" not in f for f in frames) and frames[-1] == "data: [DONE]"
    chunks = [json.loads(f.removeprefix("data: ")) for f in frames[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and not [c for c in chunks if "usage" in c]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Hello there.\n"
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"
    last = json.loads([f for f in with_usage.split("\n\n") if f][-2].removeprefix("data: "))
    assert last["choices"] == [] and last["usage"]["prompt_tokens"] == 321
    assert (last["usage"]["completion_tokens"], last["usage"]["prompt_tokens_details"]["cached_tokens"]) == (12, 100)


@pytest.mark.parametrize("edit_format", ["diff", "diff-fenced", "whole"])
def test_chat_steps_become_aider_edit_format_text(edit_format: str) -> None:
    script = [step(edit_file("app.py", "x = 1", "x = 2"), write_file("new.txt", "fresh\n"), write_file("app.py", "y\n"),
                   run("pytest -q"), text("Done."), usage=Usage(500, 20))]
    system, example, fence = {"diff": (DIFF_SYSTEM, DIFF_EXAMPLE, ("```", "```")),
                              "diff-fenced": (DIFF_SYSTEM, FENCED_EXAMPLE, ("```", "```")),
                              "whole": (WHOLE_SYSTEM, None, ("<source>", "</source>"))}[edit_format]
    with FakeModelServer({"e": script}) as fake:
        status_code, raw = post(fake, {"model": "m", "messages": messages(system, example, fence, "e")})
        assert fake.problems == []
    reply = json.loads(raw)
    assert status_code == 200 and reply["object"] == "chat.completion"
    assert (reply["usage"]["prompt_tokens"], reply["usage"]["completion_tokens"]) == (500, 20)
    content = reply["choices"][0]["message"]["content"]
    if edit_format == "whole":
        assert content == ("app.py\n<source>\nimport os\nx = 2  # one\n</source>\n\n"
                           "new.txt\n<source>\nfresh\n</source>\n\n"
                           "app.py\n<source>\ny\n</source>\n\nRun `pytest -q`.\n\nDone.\n")
        return
    def block(path: str, search: str, replace: str) -> str:
        body = f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"
        return f"```\n{path}\n{body}```\n" if edit_format == "diff-fenced" else f"{path}\n```\n{body}```\n"
    assert content == "\n".join([block("app.py", "x = 1  # one\n", "x = 2  # one\n"), block("new.txt", "", "fresh\n"),
                                 block("app.py", "import os\nx = 1  # one\n", "y\n"), "```bash\npytest -q\n```\n",
                                 "Done.\n"])


def test_chat_steps_follow_the_turns_after_the_marker_side_queries_and_errors() -> None:
    with FakeModelServer({"t": [text("first"), text("second")], "limit": [error(429)]}, api_key="test-key") as fake:
        reflected = messages(DIFF_SYSTEM, DIFF_EXAMPLE, ("```",) * 2, "t", {"role": "assistant", "content": "first"},
                             {"role": "user", "content": "I updated the files."},
                             {"role": "assistant", "content": "Ok."},
                             {"role": "user", "content": "# 1 SEARCH/REPLACE block failed to match!"})
        _, second = post(fake, {"model": "m", "messages": reflected})
        commit = [{"role": "system", "content": "You are an expert software engineer that generates concise, one-line "
                                                "Git commit messages based on the provided diffs."},
                  {"role": "user", "content": "diff --git a/x b/x [[script:t]]"}]
        _, side = post(fake, {"model": "m", "messages": commit})
        limited, limit_body = post(fake, {"model": "m", "messages": messages(DIFF_SYSTEM, None, ("```",) * 2, "limit")})
        denied, _ = post(fake, {"model": "m", "messages": messages(DIFF_SYSTEM, None, ("```",) * 2, "t")}, key="bad")
        assert [(r.key, r.step, r.status) for r in fake.requests] == [
            ("t", 1, 200), (None, 0, 200), ("limit", 0, 429), ("t", 0, 401)]
        assert fake.problems == [] and fake.usage_reported[""].responses == 1
    assert json.loads(second)["choices"][0]["message"]["content"] == "second\n"
    assert json.loads(side)["choices"][0]["message"]["content"] == "OK\n"
    assert (limited, denied) == (429, 401)
    assert json.loads(limit_body)["error"]["code"] == "rate_limit_exceeded"
