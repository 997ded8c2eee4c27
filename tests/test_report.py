"""`orchard report` (issue 15, item 1): the run's figures, each attempt split into its phases, concurrency, cost,
the critical path as run; on the terminal, as JSON and as one self-contained HTML file; `orchard run` writes it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from orchard.core.journal import AgentExit, AttemptStart, Counts, Verdict
from orchard.core.model import AgentSpec, Outcome, Plan, RunStatus, Task
from orchard.core.timeline import AttemptSpan, attempt_spans, concurrency, critical_path, queue_lengths
from orchard.core.transitions import Journal
from orchard.store import Store
from tests.conftest import Result, git
from tests.test_cli import assert_clean_exit
from tests.test_engine_acceptance import plan_text, task


def test_phases_concurrency_and_the_critical_path_come_from_the_events() -> None:
    events: list[tuple[float, dict[str, Any]]] = [
        (0.0, {"type": "task.status", "task": "a", "status": "queued"}),
        (1.0, {"type": "attempt.started", "task": "a", "attempt": 1, "agent": "x"}),
        (1.0, {"type": "setup.started", "task": "a", "attempt": 1}),
        (3.0, {"type": "setup.finished", "task": "a", "attempt": 1}),
        (9.0, {"type": "verify.finished", "task": "a", "attempt": 1, "duration_s": 2.0}),
        (9.5, {"type": "attempt.finished", "task": "a", "attempt": 1, "outcome": "success"}),
        (10.0, {"type": "merge.finished", "task": "a", "result": "merged"}),
        (2.0, {"type": "attempt.started", "task": "b", "attempt": 1, "agent": "y"}),
        (4.0, {"type": "attempt.finished", "task": "b", "attempt": 1, "outcome": "agent_error", "detail": "boom"}),
        (10.0, {"type": "task.status", "task": "c", "status": "queued"}),
        (11.0, {"type": "attempt.started", "task": "c", "attempt": 1, "agent": "x"}),
        (15.0, {"type": "attempt.finished", "task": "c", "attempt": 1, "outcome": "success"}),
        (16.0, {"type": "merge.finished", "task": "c", "result": "merged"}),
        (12.0, {"type": "task.status", "task": "d", "status": "queued"}),
        (12.0, {"type": "task.status", "task": "e", "status": "queued"}),
        (13.0, {"type": "task.status", "task": "d", "status": "cancelled"}),
    ]
    spans = attempt_spans(events, now=20.0)
    a, b, c = spans
    assert [p.name for p in c.phases] == ["wait", "agent", "merge"]
    assert [(p.name, p.start, p.end) for p in a.phases] == [
        ("wait", 0.0, 1.0), ("setup", 1.0, 3.0), ("agent", 3.0, 7.0), ("verify", 7.0, 9.0), ("merge", 9.5, 10.0)]
    assert (b.outcome, b.detail, [p.name for p in b.phases]) == ("agent_error", "boom", ["agent"])
    steps = concurrency(spans, now=20.0)
    assert max(s.running for s in steps) == 2 and steps[-1].running == 0
    assert dict(next(s for s in steps if s.running == 2).by_agent) == {"x": 1, "y": 1}
    assert critical_path(spans, {"c": ["a", "b"], "b": [], "a": []}) == ["a", "c"]
    # waiting for a slot: from `queued` to the attempt's start, or to any other status (two at once: one step)
    assert queue_lengths(events) == [(0.0, 1), (1.0, 0), (10.0, 1), (11.0, 0), (12.0, 2), (13.0, 1)]
    assert critical_path([AttemptSpan("solo", 1, start=1.0, end=2.0)], {}) == ["solo"]


class Bars(HTMLParser):
    """The timeline's attempt bars and the page's external references."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[dict[str, str | None]] = []
        self.external: list[str] = []
        self.lanes: list[tuple[str, str]] = []  # the concurrency chart's (lane, peak)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("class") == "bar":
            self.bars.append(found)
        if found.get("class") == "lane-c":
            self.lanes.append((str(found["data-lane"]), str(found["data-peak"])))
        for key in ("src", "href"):
            if found.get(key) and not str(found[key]).startswith("data:"):  # inline, nothing to fetch
                self.external.append(str(found[key]))


def test_a_run_writes_its_report_and_report_shows_it_three_ways(
        orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    plan = write_plan(plan_text(
        task("ok", "@write ok.txt fine\n@summary made ok.txt") + task(
            "flaky", "@unless-feedback @exit 3\n@if-feedback @write flaky.txt second time", "    retries: 1\n")
        + task("after", "@print <script>alert(1)</script>\n@write after.txt a", "    depends_on: [ok]\n")))
    run = orchard("run", str(plan))
    assert_clean_exit(run, 0)
    written = re.search(r"^report: (\S+report\.html)$", run.out, re.MULTILINE)
    assert written, run.out
    page = Path(written.group(1))
    assert page.parent.name == orchard("status", "--json").json()["run"]["id"]

    doc = json.loads(orchard("report", "--json").out)
    status = orchard("status", "--json").json()
    assert doc["summary"]["wall_s"] > 0 and doc["run"]["id"] == status["run"]["id"]
    assert doc["summary"]["cost_usd"] == status["totals"]["cost_usd"]
    tasks = {t["id"]: t for t in doc["tasks"]}
    assert [a["outcome"] for a in tasks["flaky"]["attempts"]] == ["agent_error", "success"]
    assert {p["name"] for p in tasks["ok"]["attempts"][0]["phases"]} >= {"agent", "merge"}
    assert tasks["ok"]["files"] == [{"path": "ok.txt", "added": 1, "removed": 0}]
    assert tasks["ok"]["summary"] == "made ok.txt" and "orchard diff ok" in tasks["ok"]["commands"]
    assert doc["critical_path"][-1] in ("after", "flaky") and doc["run"]["estimated_makespan_s"] > 0
    assert max(step["running"] for step in doc["concurrency"]) >= 2

    html_path = repo.parent / "r.html"
    assert_clean_exit(orchard("report", "--html", str(html_path)), 0)
    for text in (page.read_text(encoding="utf-8"), html_path.read_text(encoding="utf-8")):
        parsed = Bars()
        parsed.feed(text)
        bars = {(b["data-task"], b["data-attempt"]): (b["data-status"], b["data-outcome"]) for b in parsed.bars}
        assert bars == {("ok", "1"): ("merged", "success"), ("flaky", "1"): ("merged", "agent_error"),
                        ("flaky", "2"): ("merged", "success"), ("after", "1"): ("merged", "success")}
        assert parsed.external == []  # nothing to fetch: it opens offline
        # running at once: all agents, then each agent against its limit, then the queue
        assert parsed.lanes[0] == ("all", str(max(step["running"] for step in doc["concurrency"])))
        assert [lane for lane, _ in parsed.lanes] == ["all", *sorted({a for s in doc["concurrency"]
                                                                      for a in s["by_agent"]}), "queue"]
        # what the agent printed is in the log's tail, escaped: it cannot run as the page's script
        assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text

    terminal = orchard("report")
    assert_clean_exit(terminal, 0)
    assert "timeline" in terminal.out and "agent_error → success" in terminal.out
    assert "critical path as run" in terminal.out


def record_a_run_on_two_hosts(repo: Path) -> str:
    """A finished run in the repository's real store, written through the journal as a session would: task `one`'s
    attempt 1 ran on the cluster node `node-x` (token `abc`), its attempt 2 on this machine; returns the run's id."""
    plan = Plan.build([Task("one", "p1", "fake")], {"fake": AgentSpec("fake", "command", None, {"command": ("x",)})})
    clock = [1000.0]
    store = Store(repo / ".orchard" / "state.db")
    try:
        journal = Journal(store, "hosts", clock=lambda: clock[0])
        head = git(repo, "rev-parse", "HEAD")
        journal.run_started(plan=plan, base="main", base_commit=head, integration_branch="orchard/hosts/integration",
                            parallel=2, pid=1)
        for number, host, token in ((1, "node-x", "abc"), (2, "local", "")):
            journal.task_started("one", counts=Counts(number, number - 1), branch="orchard/hosts/task/one")
            attempt = journal.attempt_started(AttemptStart(
                "one", number, "fake", "orchard/hosts/task/one", str(repo.parent / "wt"), head,
                str(repo.parent / f"one.{number}.log"), host=host, token=token))
            clock[0] += 2.0
            journal.agent_exited(attempt, AgentExit(exit_code=3, signal=None, duration_s=2.0))
            journal.attempt_finished(attempt, Verdict(Outcome.AGENT_ERROR, "exit 3"))
            (journal.task_queued if number == 1 else journal.task_failed)("one", counts=Counts(number, number))
        journal.run_finished(RunStatus.FAILED, reason="one failed")
    finally:
        store.close()
    return "hosts"


def test_the_machine_each_attempt_ran_on_is_in_status_show_and_the_report(
        orchard: Callable[..., Result], repo: Path) -> None:
    run_id = record_a_run_on_two_hosts(repo)
    (status_task,) = orchard("status", "--json").json()["tasks"]
    assert (status_task["id"], status_task["host"]) == ("one", "local")  # its latest attempt's
    assert "token" not in status_task

    shown = orchard("show", "one", "--json").json()
    assert [(a["number"], a["host"]) for a in shown["attempts"]] == [(1, "node-x"), (2, "local")]
    assert all("token" not in a for a in shown["attempts"])
    text = orchard("show", "one")
    assert_clean_exit(text, 0)
    assert "attempt 1 on fake on node-x: agent_error" in text.out
    assert "attempt 2 on fake: agent_error" in text.out  # this machine goes without saying

    doc = json.loads(orchard("report", "--json").out)
    assert doc["run"]["id"] == run_id
    attempts = doc["tasks"][0]["attempts"]
    assert [(a["number"], a["host"]) for a in attempts] == [(1, "node-x"), (2, "local")]
    assert all("token" not in a for a in attempts)

    page = repo.parent / "hosts.html"
    assert_clean_exit(orchard("report", "--html", str(page)), 0)
    parsed = Bars()
    parsed.feed(page.read_text(encoding="utf-8"))
    bars = {b["data-attempt"]: (b["data-host"], b["title"]) for b in parsed.bars}
    assert bars == {"1": ("node-x", "one attempt 1 on fake on node-x: agent_error: exit 3"),
                    "2": ("local", "one attempt 2 on fake on local: agent_error: exit 3")}
