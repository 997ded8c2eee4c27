"""Notifications (`notify:` of a plan): real runs of the CLI, real child processes for commands, real HTTP on
loopback for webhooks (a receiver in a thread of the test), and the pure mapping from events to notifications."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from orchard.core.events import (
    AttemptFinished,
    PreflightChecked,
    RunFinished,
    RunHeld,
    RunNote,
    RunStarted,
    TaskStatusChanged,
    TaskWarning,
)
from orchard.core.model import AgentSpec, Notify, NotifyEvent, Outcome, RunStatus, TaskStatus
from orchard.core.notify import Notices, fill, hidden_url, one_line, shown_url, webhook_secrets
from orchard.core.plan_refs import programs
from orchard.core.redact import Redactor
from orchard.core.serialize import plan_from_dict, plan_to_dict, split_secrets
from orchard.core.transitions import Journal
from orchard.errors import PlanError
from orchard.plan import load
from orchard.planner.check import Target, check_draft
from orchard.planner.config import AgentsConfig
from orchard.runtime.notify import Notifier, post
from orchard.testing import MemoryStore
from tests.conftest import PYTHON, agent_block, git, run_orchard
from tests.test_engine_acceptance import plan_text, task

SECRET = "sekret-value-123456"  # an agent's env secret (by its name)
PRIVATE = "private-words-98765"  # the value of a variable the plan's `redact` names
TOKEN = "tok3n-abcdef123456"  # the webhook's token, in its query string


@dataclass
class Receiver:
    """An HTTP server on loopback recording every POST; it answers with `codes` in turn (then 200)."""

    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)

    def bodies(self, event: str) -> list[dict[str, Any]]:
        return [p["body"] for p in self.posts if p["body"]["event"] == event]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            box[0].posts.append({"path": self.path, "type": self.headers["Content-Type"], "body": body})
            code = box[0].codes.pop(0) if box[0].codes else 200
            self.send_response(code)
            if 300 <= code < 400:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    box.append(Receiver(f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield box[0]
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def hanging() -> Iterator[str]:
    """The URL of a server that takes connections (the kernel completes them) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    sock.close()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def secret_agents() -> str:
    return agent_block(extra=f', env: {{API_TOKEN: "{SECRET}"}}')


def notify_plan(notify: str, tasks: str, *, head: str = "") -> str:
    """A plan (the fake agent, no retries) with a `notify:` block in YAML."""
    return head + f"notify:\n{notify}" + plan_text(tasks, agents=secret_agents())


FAILING = task("good", "@write good.txt fine") + task("bad", f"@print using {SECRET} and {PRIVATE}\n@exit 3")


def events(repo: Path, kind: str = "run.note") -> list[dict[str, Any]]:
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        return [json.loads(row[0]) for row in db.execute("SELECT data FROM events WHERE type = ? ORDER BY id",
                                                          (kind,))]


def run_id(repo: Path) -> str:
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        return str(db.execute("SELECT id FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1").fetchone()[0])


# ---- webhooks ---------------------------------------------------------------------------------------------------

def test_webhook_gets_task_failed_and_run_finished_with_their_fields_and_no_secret(
        repo: Path, write_plan: Callable[[str], Path], receiver: Receiver) -> None:
    url = f"{receiver.url}/hook?token={TOKEN}"
    text = notify_plan(f'  - {{on: [task_failed, run_finished], webhook: "{url}"}}\n', FAILING,
                       head="redact: [ORCHARD_TEST_PRIVATE]\n")
    result = run_orchard("run", str(write_plan(text)), cwd=repo, env={"ORCHARD_TEST_PRIVATE": PRIVATE})
    assert result.code == 1, result.err
    run = run_id(repo)
    assert [p["body"]["event"] for p in receiver.posts] == ["task_failed", "run_finished"]
    assert {p["path"] for p in receiver.posts} == {f"/hook?token={TOKEN}"}  # sent to the URL as written
    assert {p["type"] for p in receiver.posts} == {"application/json"}
    failed, = receiver.bodies("task_failed")
    assert (failed["run"], failed["task"], failed["status"]) == (run, "bad", "failed")
    assert failed["message"].startswith("task bad failed: agent_error") and "exit 3" in failed["message"]
    assert failed["ts"].endswith("Z")
    finished, = receiver.bodies("run_finished")
    assert (finished["run"], finished["task"], finished["status"]) == (run, None, "failed")
    assert (finished["tasks"], finished["merged"], finished["failed"], finished["blocked"]) == (2, 1, 1, 0)
    assert finished["cost_usd"] == 0.0 and finished["wall_s"] > 0
    sent = json.dumps(receiver.posts)
    assert SECRET not in sent and PRIVATE not in sent and "[REDACTED:API_TOKEN]" in failed["message"]
    assert "[REDACTED:ORCHARD_TEST_PRIVATE]" in failed["message"]
    assert not [n for n in events(repo) if n["level"] == "warning" and "notify" in n["text"]]


def test_a_receiver_that_never_answers_delays_the_end_by_at_most_its_timeout(
        repo: Path, write_plan: Callable[[str], Path], hanging: str) -> None:
    tasks = "".join(task(f"bad{i}", "@exit 3") for i in range(3)) + task("good", "@write good.txt fine")
    started = time.monotonic()
    assert run_orchard("run", str(write_plan(plan_text(tasks))), cwd=repo).code == 1
    plain = time.monotonic() - started
    # four notifications to a receiver that holds each for its whole timeout: 4 s if the end waited for them all
    text = plan_text(tasks, agents=secret_agents())
    text = f"notify:\n  - {{on: [task_failed, run_finished], webhook: \"{hanging}\", timeout: 1, retries: 0}}\n" + text
    started = time.monotonic()
    result = run_orchard("run", str(write_plan(text)), cwd=repo)
    notified = time.monotonic() - started
    assert result.code == 1, result.err  # the run's own end, whatever its notifications did
    assert notified - plain < 2.5, (plain, notified)
    assert notified < 6.0
    notes = [n["text"] for n in events(repo) if n["run_id"] == run_id(repo) and n["level"] == "warning"]
    assert any("could not deliver task_failed" in n and "no answer within 1 s" in n for n in notes), notes
    assert any("not delivered in this session" in n for n in notes), notes


def test_a_failing_receiver_is_retried_then_noted_and_never_fails_the_run(
        repo: Path, write_plan: Callable[[str], Path], receiver: Receiver) -> None:
    receiver.codes = [500, 503, 500]  # the first notification's three tries
    url = f"{receiver.url}/hook?token={TOKEN}"
    text = notify_plan(f'  - {{on: [run_finished], webhook: "{url}", timeout: 2, retries: 2}}\n',
                       task("good", "@write good.txt fine"))
    result = run_orchard("run", str(write_plan(text)), cwd=repo)
    assert result.code == 0, result.err  # a completed run, though its only notification failed
    assert len(receiver.posts) == 3 and {p["body"]["event"] for p in receiver.posts} == {"run_finished"}
    note, = [n["text"] for n in events(repo) if "could not deliver" in n["text"]]
    port = receiver.url.rsplit(":", 1)[1]
    assert note.startswith(f"notify[1] (webhook http://127.0.0.1:{port}): could not deliver run_finished (3 tries)")
    assert "HTTP 500" in note and TOKEN not in note


def test_a_retried_notification_arrives_once_the_receiver_recovers(
        repo: Path, write_plan: Callable[[str], Path], receiver: Receiver) -> None:
    receiver.codes = [500, 502]
    text = notify_plan(f'  - {{on: [run_finished], webhook: "{receiver.url}/h"}}\n', task("good", "@write g.txt x"))
    assert run_orchard("run", str(write_plan(text)), cwd=repo).code == 0
    assert len(receiver.posts) == 3 and receiver.posts[-1]["body"]["status"] == "completed"
    assert not [n for n in events(repo) if "notify" in n["text"]]


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.codes = [302]
    assert post(f"{receiver.url}/hook", b'{"event": "run_finished"}', 2.0) == "HTTP 302 (redirects are not followed)"
    assert [p["path"] for p in receiver.posts] == ["/hook"]


def test_the_webhook_token_stays_out_of_the_snapshot_and_every_event_and_a_retry_still_notifies(
        repo: Path, write_plan: Callable[[str], Path], receiver: Receiver) -> None:
    url = f"{receiver.url}/hook?token={TOKEN}"
    dead = f"http://127.0.0.1:{closed_port()}/other?token={TOKEN}x"
    notify = (f'  - {{on: [task_failed, run_finished], webhook: "{url}"}}\n'
              f'  - {{on: [run_finished], webhook: "{dead}", timeout: 1, retries: 0}}\n')
    # the agent prints the token (read from the repository, not from the plan): a secret wherever it appears, as an
    # agent's env secret is
    (repo / "hook.txt").write_text(f"/hook?token={TOKEN}\n")
    git(repo, "add", "hook.txt")
    git(repo, "commit", "-qm", "hook")
    text = notify_plan(notify, task("bad", "@git cat-file -p HEAD:hook.txt\n@exit 3"))
    assert run_orchard("run", str(write_plan(text)), cwd=repo).code == 1
    with sqlite3.connect(repo / ".orchard" / "state.db") as db:
        snapshot, = db.execute("SELECT plan_json FROM runs").fetchone()
        journaled = json.dumps([row[0] for row in db.execute("SELECT data FROM events")])
    assert TOKEN not in snapshot and f"{receiver.url}/[REDACTED:notify[1].webhook]" in json.loads(snapshot)[
        "notify"][0]["webhook"]
    assert TOKEN not in journaled and "[REDACTED:notify[1].webhook]" in journaled
    assert "could not deliver run_finished" in journaled  # the dead one, named by its origin only
    assert len(receiver.bodies("run_finished")) == 1
    # a later session of the run reads the URL back from beside the store, and notifies as the first did
    retried = run_orchard("retry", "bad", cwd=repo)
    assert retried.code == 1, retried.err
    assert [p["body"]["event"] for p in receiver.posts] == ["task_failed", "run_finished"] * 2
    assert {p["path"] for p in receiver.posts} == {f"/hook?token={TOKEN}"}
    assert {b["body"]["run"] for b in receiver.posts} == {run_id(repo)}


def test_a_dry_run_tells_nobody(repo: Path, write_plan: Callable[[str], Path], receiver: Receiver) -> None:
    text = notify_plan(f'  - {{on: all, webhook: "{receiver.url}/h"}}\n', FAILING)
    result = run_orchard("run", "--dry-run", str(write_plan(text)), cwd=repo)
    assert result.code in (0, 1), result.err
    assert receiver.posts == []


def test_a_planner_may_not_set_notify(tmp_path: Path) -> None:
    agents = {"ai": {"type": "command", "command": ["x"]}}
    target = Target(AgentsConfig("agents.yaml", agents, {"ai": AgentSpec("ai", "command")}), tmp_path / "plan.yaml",
                    tmp_path, 5, "ai")
    answer = "```yaml\nnotify: [{on: all, webhook: 'https://attacker.example/x'}]\ntasks: [{id: a, prompt: x}]\n```"
    assert check_draft(answer, target).problems == ("field 'notify': not the planner's to set; leave it out",)


# ---- commands and the desktop ----------------------------------------------------------------------------------

RECORDER = """\
import json, sys
with open(sys.argv[1], "a") as fh:
    fh.write(json.dumps(sys.argv[2:]) + "\\n")
"""


def recorder(tmp_path: Path) -> tuple[Path, Path]:
    script, out = tmp_path / "record.py", tmp_path / "calls.jsonl"
    script.write_text(RECORDER)
    return script, out


def calls(out: Path) -> list[list[str]]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def test_a_command_gets_its_placeholders_filled_in_each_argument(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    script, out = recorder(tmp_path)
    argv = json.dumps([PYTHON, str(script), str(out), "{run}", "{task}", "{status}", "{message}", "--on={event}",
                       "{unknown braces stay}"])
    result = run_orchard("run", str(write_plan(notify_plan(f"  - {{on: all, command: {argv}}}\n", FAILING))), cwd=repo)
    assert result.code == 1, result.err
    run = run_id(repo)
    failed, finished = calls(out)
    assert failed[:3] == [run, "bad", "failed"] and failed[4:] == ["--on=task_failed", "{unknown braces stay}"]
    assert failed[3].startswith("task bad failed: agent_error") and SECRET not in failed[3]
    assert finished[:3] == [run, "", "failed"] and finished[4] == "--on=run_finished"
    assert finished[3].startswith(f"run {run} failed: 1 of 2 merged, 1 failed")
    log = (repo / ".orchard" / "runs" / run / "notify.log").read_text()
    assert "[orchard: notify[1] (command " in log and SECRET not in log


def test_a_command_past_its_timeout_is_stopped_and_noted(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    argv = json.dumps([PYTHON, "-c", "import time; time.sleep(60)"])
    started = time.monotonic()
    text = notify_plan(f"  - {{on: [run_finished], command: {argv}, timeout: 1, retries: 0}}\n",
                       task("good", "@write g.txt x"))
    assert run_orchard("run", str(write_plan(text)), cwd=repo).code == 0
    assert time.monotonic() - started < 8.0
    notes = [n["text"] for n in events(repo)]
    assert any("could not deliver run_finished (1 try): no end within 1 s" in n for n in notes), notes


def test_desktop_uses_notify_send_when_present_and_says_when_not(
        repo: Path, write_plan: Callable[[str], Path], tmp_path: Path) -> None:
    script, out = recorder(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "notify-send").write_text(f"#!{PYTHON}\nimport runpy, sys\nsys.argv[1:1] = ['{out}']\n"
                                         f"runpy.run_path('{script}')\n")
    (bin_dir / "notify-send").chmod(0o755)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "notify-send").exists())
    plan = write_plan(notify_plan("  - {on: [task_failed], desktop: true}\n", FAILING))
    assert run_orchard("run", str(plan), cwd=repo, env={"PATH": f"{bin_dir}{os.pathsep}{path}"}).code == 1
    (title, message), = calls(out)
    assert title == "orchard: task_failed" and message.startswith("task bad failed")
    assert run_orchard("run", str(plan), cwd=repo, env={"PATH": path}).code == 1
    notes = [n["text"] for n in events(repo) if n["run_id"] == run_id(repo)]
    assert "notify[1] (desktop): desktop notifications need notify-send, which is not on PATH: this entry tells " \
           "nothing" in notes
    assert len(calls(out)) == 1


def test_the_notifier_redacts_what_it_sends_and_tells_attention_notes(tmp_path: Path, receiver: Receiver) -> None:
    """In process, over a journal that redacts nothing: the notifier's own redaction is what keeps the secret, from
    a command's arguments and from a webhook's JSON."""
    script, out = recorder(tmp_path)
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(plan_text(task("a", "@exit 0")))
    entry = Notify(events=(NotifyEvent.NEEDS_ATTENTION,), command=(PYTHON, str(script), str(out), "{message}"))
    plan = load(plan_file)

    async def scenario() -> None:
        journal = Journal(MemoryStore(), "r1", clock=time.time)
        hook = Notify(events=(NotifyEvent.NEEDS_ATTENTION,), webhook=f"{receiver.url}/h")
        notifier = Notifier.attach(journal, (entry, hook), redactor=Redactor({"API_TOKEN": SECRET}), cwd=tmp_path,
                                   log_path=tmp_path / "notify.log", environ=os.environ)
        assert notifier is not None
        journal.run_started(plan=plan, base="main", base_commit="0" * 40, integration_branch="b", parallel=1, pid=1)
        journal.noted(f"a plain warning with {SECRET}", level="warning")
        journal.noted(f"{tmp_path}/.git/index.lock is locked: {SECRET}", level="warning", attention=True)
        await notifier.close()

    asyncio.run(scenario())
    (message,), = calls(out)
    assert message == f"run r1: {tmp_path}/.git/index.lock is locked: [REDACTED:API_TOKEN]"
    assert [p["body"]["message"] for p in receiver.posts] == [message]


# ---- the plan format -------------------------------------------------------------------------------------------

def test_plan_errors_name_the_entry_and_the_field_and_exit_2(repo: Path, write_plan: Callable[[str], Path]) -> None:
    notify = ("  - {on: [task_fail], webhook: 'https://example.invalid/h'}\n"
              "  - {on: [run_finished], command: [echo, hi], webhook: 'https://example.invalid/h'}\n"
              f"  - {{on: [run_finished], webhook: 'ftp://example.invalid/h?token={TOKEN}'}}\n"
              "  - {on: [paused], command: [echo, '{task_id}']}\n"
              "  - {webhook: 'https://example.invalid/h', retries: -1, colour: red}\n"
              "  - {on: [paused]}\n")
    result = run_orchard("run", str(write_plan(notify_plan(notify, task("a", "@exit 0")))), cwd=repo)
    assert result.code == 2
    err = result.err
    assert "field 'notify[1].on': unknown event 'task_fail' (did you mean 'task_failed'?)" in err
    assert "field 'notify[2]': give exactly one of command, webhook or desktop: true (got command and webhook)" in err
    assert "field 'notify[3].webhook': expected an http:// or https:// URL (it starts 'ftp://')" in err
    assert TOKEN not in err
    assert "field 'notify[4].command': unknown placeholder {task_id}" in err
    assert "field 'notify[5].colour': unknown field 'colour'" in err
    assert "field 'notify[5].retries': must be at least 0" in err
    assert "field 'notify[5]': 'on' is missing" in err
    assert "field 'notify[6]': give exactly one of command, webhook or desktop: true (got none)" in err


def test_a_bare_on_key_and_all_are_read(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(notify_plan("  - on: all\n    desktop: true\n    timeout: 30s\n"
                                "  - {on: run_finished, webhook: 'https://example.invalid/h', retries: 0}\n",
                                task("a", "@exit 0")))
    first, second = load(path).notify
    assert first == Notify(events=tuple(NotifyEvent), desktop=True, timeout_s=30.0)
    assert second == Notify(events=(NotifyEvent.RUN_FINISHED,), webhook="https://example.invalid/h", retries=0)
    path.write_text(notify_plan("  - {on: [run_finished], webhook: 'http:///nohost'}\n", task("a", "@exit 0")))
    with pytest.raises(PlanError, match=r"notify\[1\]\.webhook.*with a host"):
        load(path)


def test_a_notify_command_is_among_the_programs_doctor_and_run_check(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(notify_plan("  - {on: [run_finished], command: [no-such-notifier, '{run}']}\n",
                                task("a", "@exit 0")))
    assert [(u.program, u.what) for u in programs(load(path)) if u.what.startswith("notify")] == [
        ("no-such-notifier", "notify[1]'s command")]


def test_the_snapshot_keeps_notify_and_hides_the_webhook_token(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    command = json.dumps(["notify", "{run}"])
    path.write_text(notify_plan(f"  - {{on: [task_failed], webhook: 'https://u:pw@hooks.example/s/T1/B2?token={TOKEN}'}}"
                                f"\n  - {{on: [paused, run_finished], command: {command}, timeout: 2}}\n",
                                task("a", "@exit 0")))
    plan = load(path)
    data = plan_to_dict(plan)
    assert plan_from_dict(json.loads(json.dumps(data))).notify == plan.notify
    taken = split_secrets(data)
    assert data["notify"][0]["webhook"] == "https://hooks.example/[REDACTED:notify[1].webhook]"
    assert TOKEN not in json.dumps(data) and "pw" not in json.dumps(data["notify"])
    assert taken['["notify", 0, "webhook"]'] == f"https://u:pw@hooks.example/s/T1/B2?token={TOKEN}"


# ---- the pure parts --------------------------------------------------------------------------------------------

def test_urls_show_their_origin_and_keep_their_rest_secret() -> None:
    url = f"https://user:pw@hooks.example:8443/services/T0/B0?token={TOKEN}"
    assert shown_url(url) == "https://hooks.example:8443"
    assert hidden_url("http://127.0.0.1:9/", "n") == "http://127.0.0.1:9/"  # nothing secret in it
    assert webhook_secrets([None, url]) == {"notify[2].webhook-user": "user:pw",
                                            "notify[2].webhook": f"/services/T0/B0?token={TOKEN}"}


def test_fill_keeps_each_argument_one_and_reads_values_once() -> None:
    values = {"event": "task_failed", "run": "r1", "task": "t", "status": "failed", "message": "a {run} b; rm -rf"}
    assert fill(["x", "{message}", "--t={task}", "{\"k\": 1}", "{nope}"], values) == (
        "x", "a {run} b; rm -rf", "--t=t", "{\"k\": 1}", "{nope}")
    assert one_line("one\ntwo\x00\x1b[2J  three") == "one two\\x00\\x1b[2J three"
    assert len(one_line("x" * 2000)) == 500


def _status(task_id: str, status: TaskStatus, ts: float, reason: str = "", until: str | None = None) -> Any:
    return TaskStatusChanged(run_id="r", ts=ts, task=task_id, status=status, reason=reason, until=until)


def test_which_events_tell_what() -> None:
    notices = Notices()

    def kinds(event: Any, budget: float | None = None) -> list[tuple[str, str | None, str]]:
        return [(n.kind.value, n.task, n.status) for n in notices.notifications(event, budget_usd=budget)]

    assert kinds(RunStarted(run_id="r", ts=0, base="m", base_commit="c", integration_branch="b", tasks=3,
                            parallel=2, cost_usd=0.5)) == []
    spent = AttemptFinished(run_id="r", ts=1, task="a", attempt=1, outcome=Outcome.AGENT_ERROR, cost_usd=0.6)
    assert kinds(spent, 1.0) == [("budget_exhausted", None, "budget_exhausted")]  # 0.5 earlier + 0.6 now
    assert kinds(spent, 1.0) == []  # told once per budget
    assert kinds(spent, 1.5) == [("budget_exhausted", None, "budget_exhausted")]  # a raised one, reached again
    assert kinds(_status("a", TaskStatus.FAILED, 2, "agent_error")) == [("task_failed", "a", "failed")]
    assert kinds(_status("c", TaskStatus.CONFLICT, 2)) == [("task_failed", "c", "conflict")]
    assert kinds(_status("b", TaskStatus.BLOCKED, 2, "dependency 'a' did not merge")) == []
    assert kinds(_status("b", TaskStatus.QUEUED, 2)) == []
    limit = "fake rate limited until 2026-01-01T00:00:00.000Z"
    paused = notices.notifications(_status("d", TaskStatus.PAUSED, 3, limit, "2026-01-01T00:00:00.000Z"),
                                   budget_usd=None)
    assert [(n.kind, n.extra["until"]) for n in paused] == [(NotifyEvent.PAUSED, "2026-01-01T00:00:00.000Z")]
    assert kinds(_status("e", TaskStatus.PAUSED, 3, limit)) == []  # the same rate limit
    tampered = AttemptFinished(run_id="r", ts=4, task="f", attempt=1, outcome=Outcome.TAMPERED)
    assert kinds(tampered) == [("needs_attention", "f", "tampered")]
    assert kinds(RunNote(run_id="r", ts=5, level="warning", text="plain")) == []
    assert kinds(RunNote(run_id="r", ts=5, level="warning", text="lock", attention=True)) == [
        ("needs_attention", None, "note")]
    assert kinds(PreflightChecked(run_id="r", ts=5, command="pytest", outcome="red")) == [
        ("needs_attention", None, "preflight")]
    assert kinds(PreflightChecked(run_id="r", ts=5, command="pytest", outcome="passed")) == []
    assert kinds(TaskWarning(run_id="r", ts=5, task="g", text="removed lines")) == [
        ("needs_attention", "g", "task_warning")]
    assert kinds(RunHeld(run_id="r", ts=10, reason="held: load 3 per core > 2")) == [("needs_attention", None, "held")]
    assert kinds(RunHeld(run_id="r", ts=11, reason="")) == []
    assert kinds(RunHeld(run_id="r", ts=300, reason="held: load 3 per core > 2")) == []  # within 10 minutes
    assert kinds(RunHeld(run_id="r", ts=700, reason="held: load 3 per core > 2")) == [("needs_attention", None, "held")]
    summary = {"tasks": 3, "merged": 1, "failed": 1, "blocked": 1, "cost_usd": 1.1, "wall_s": 12.5, "speedup": 2}
    end, = notices.notifications(RunFinished(run_id="r", ts=20, status=RunStatus.FAILED, summary=summary),
                                 budget_usd=None)
    assert end.to_dict() == {"event": "run_finished", "run": "r", "task": None, "status": "failed",
                             "message": "run r failed: 1 of 3 merged, 1 failed, 1 blocked, $1.10, 12.5 s",
                             "ts": "1970-01-01T00:00:20.000Z", "tasks": 3, "merged": 1, "failed": 1, "blocked": 1,
                             "cost_usd": 1.1, "wall_s": 12.5}


def test_a_run_ending_on_its_budget_tells_it_once() -> None:
    ended = RunFinished(run_id="r", ts=1, status=RunStatus.BUDGET_EXHAUSTED, summary={})
    assert [n.kind.value for n in Notices().notifications(ended, budget_usd=1.0)] == ["run_finished",
                                                                                      "budget_exhausted"]
    told = Notices()
    told.notifications(AttemptFinished(run_id="r", ts=0, task="a", attempt=1, outcome=Outcome.SUCCESS, cost_usd=2),
                       budget_usd=1.0)
    assert [n.kind.value for n in told.notifications(ended, budget_usd=1.0)] == ["run_finished"]

