"""`orchard web` (issue 15, item 2) and the HTML report, in a real headless Chromium (item 6): the dashboard opened
before a run starts shows its tasks go to `merged` live, follows the run through a crash and `orchard resume`, a
task page shows its log as it is written; off loopback every route demands the token; the report opens offline with
a bar per attempt and the status document's figures."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.browser import Browser
from tests.conftest import PYTHON, Result, wait_for
from tests.test_cli import assert_clean_exit, plan_text, task
from tests.test_report import record_a_run_on_two_hosts

ROUTES = ("/", "/task/a", "/api/runs", "/api/status", "/api/diff/a", "/api/attempts/a", "/fragment/timeline",
          "/events", "/events/log/a")


@pytest.fixture
def web(repo: Path) -> Iterator[Callable[..., str]]:
    """`web(*args)` starts `orchard web --port 0 ARGS` in the repository and returns the URL it printed."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> str:
        proc = subprocess.Popen([PYTHON, "-m", "orchard", "web", "--port", "0", *args], cwd=repo, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the ready line: the socket is bound before it is printed
        found = re.search(r"serving (http://\S+)", line)
        assert found, (line, proc.poll())
        return found.group(1)

    yield start
    for proc in started:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def status_code(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_off_loopback_every_route_demands_the_token(web: Callable[..., str]) -> None:
    url = web("--host", "0.0.0.0")
    found = re.match(r"http://0\.0\.0\.0:(\d+)/\?token=([\w-]+)$", url)
    assert found, url
    base, token = f"http://127.0.0.1:{found.group(1)}", found.group(2)
    assert {route: status_code(base + route) for route in ROUTES} == dict.fromkeys(ROUTES, 401)
    assert status_code(f"{base}/api/status?token=wrong") == 401
    assert status_code(f"{base}/?token={token}") == 200
    assert status_code(f"{base}/api/status", {"Authorization": f"Bearer {token}"}) == 200


def test_loopback_needs_no_token(web: Callable[..., str]) -> None:
    url = web()
    assert "token" not in url and status_code(url + "api/status") == 200


def test_the_dashboard_follows_a_run_live_through_a_crash_and_resume(
        browser: Browser, web: Callable[..., str], orchard: Callable[..., Result],
        write_plan: Callable[[str], Path], repo: Path) -> None:
    go = repo.parent / "go"
    tasks = "".join(task(f"t{i}", f"@print working on t{i}\n@wait-for {go} 60\n@write t{i}.txt {i}") for i in range(6))
    plan = write_plan(plan_text(tasks, parallel=3))
    browser.open(web())  # before any run
    browser.wait_until("#run", "no runs yet")

    run = subprocess.Popen([PYTHON, "-m", "orchard", "run", str(plan)], cwd=repo, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        browser.wait_until("tr[data-task][data-status=running]")  # no reload: the feed brought it
        rows = browser.find_all("tr[data-task]")
        assert sorted(r.get_attribute("data-task") or "" for r in rows) == [f"t{i}" for i in range(6)]
        browser.wait_until("#timeline .bar[data-task]")  # the timeline grows as the attempts run
        browser.wait_until("#queue", " · eta ")  # and the run's estimated finish is on the queue line
        browser.screenshot("running")
        run.send_signal(signal.SIGKILL)  # a crash: the store still says running
        run.wait(timeout=10)
    finally:
        if run.poll() is None:
            run.kill()
    go.touch()
    resumed = orchard("resume")
    assert_clean_exit(resumed, 0)
    browser.wait_until(lambda: len(browser.find_all("tr[data-status=merged]")) == 6)
    browser.wait_until("#run", "completed")
    browser.wait_until(lambda: len(browser.find_all("#timeline .bar[data-status=merged]")) >= 6)
    browser.screenshot("merged")
    assert not browser.find_all("tr[data-status=running]")


def test_a_task_page_shows_its_log_as_it_is_written(
        browser: Browser, web: Callable[..., str], write_plan: Callable[[str], Path], repo: Path) -> None:
    go = repo.parent / "go"
    plan = write_plan(plan_text(task("a", f"@print first line\n@wait-for {go} 60\n@print <b>second</b> line\n"
                                          "@write a.txt a")))
    run = subprocess.Popen([PYTHON, "-m", "orchard", "run", str(plan)], cwd=repo, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = web()
        wait_for(lambda: (repo / ".orchard" / "state.db").exists(), "the run's store")
        browser.open(url + "task/a")
        browser.wait_until("#log", "first line")
        assert "second" not in browser.find("#log").text
        go.touch()
        browser.wait_until("#log", "<b>second</b> line")  # as text: the agent's output is never markup
        assert not browser.find_all("#log b")
        assert run.wait(timeout=60) == 0
        browser.wait_until("#diff", "+a")
    finally:
        if run.poll() is None:
            run.kill()


def test_a_task_page_lists_its_attempts_with_the_machine_each_ran_on(
        browser: Browser, web: Callable[..., str], repo: Path) -> None:
    record_a_run_on_two_hosts(repo)  # attempt 1 on the node `node-x`, attempt 2 here
    url = web()
    with urllib.request.urlopen(url + "api/attempts/one", timeout=5) as response:
        listed = json.loads(response.read())
    assert [(a["number"], a["agent"], a["host"], a["outcome"]) for a in listed] == [
        (1, "fake", "node-x", "agent_error"), (2, "fake", "local", "agent_error")]
    assert all("token" not in a for a in listed)
    browser.open(url + "task/one")
    browser.wait_until("#attempts tr[data-host=node-x]", "node-x")
    rows = browser.evaluate("return [...document.querySelectorAll('#attempts tr')].map(r => "
                            "[r.dataset.attempt, r.dataset.host, [...r.cells].map(c => c.textContent)])")
    assert rows == [["1", "node-x", ["1", "fake", "node-x", "agent_error", "exit 3"]],
                    ["2", "local", ["2", "fake", "local", "agent_error", "exit 3"]]]
    assert browser.console_errors() == []


def test_the_report_opens_offline_with_a_bar_per_attempt_and_the_run_figures(
        browser: Browser, orchard: Callable[..., Result], write_plan: Callable[[str], Path], repo: Path) -> None:
    plan = write_plan(plan_text(task("ok", "@write ok.txt ok") + task(
        "flaky", "@unless-feedback @exit 3\n@if-feedback @write f.txt f", "    retries: 1\n")
        + task("bad", "@exit 4", "    retries: 0\n")))
    assert_clean_exit(orchard("run", str(plan)), 1)
    status = orchard("status", "--json").json()
    page = repo / ".orchard" / "runs" / status["run"]["id"] / "report.html"
    browser.open(page, offline=True)
    browser.wait_until("#timeline .bar")
    bars = [(b.get_attribute("data-task"), b.get_attribute("data-attempt"), b.get_attribute("data-status"))
            for b in browser.find_all(".bar[data-task]")]
    assert sorted(bars) == sorted([("ok", "1", "merged"), ("flaky", "1", "merged"), ("flaky", "2", "merged"),
                                   ("bad", "1", "failed")])
    figures = browser.find("#figures")
    doc = json.loads(orchard("report", "--json").out)
    assert float(figures.get_attribute("data-cost") or "nan") == status["totals"]["cost_usd"]
    assert float(figures.get_attribute("data-wall") or "nan") == doc["summary"]["wall_s"]
    assert browser.requests() == [page.resolve().as_uri()]  # nothing fetched but the page itself
    assert browser.console_errors() == []
    browser.screenshot("report")


def post(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=b"", method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def csrf_of(page_url: str) -> str:
    with urllib.request.urlopen(page_url, timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'"csrf": "([\w-]+)"', text)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def test_actions_need_the_flag_the_pages_csrf_token_and_the_same_origin(
        web: Callable[..., str], orchard: Callable[..., Result], write_plan: Callable[[str], Path]) -> None:
    assert_clean_exit(orchard("run", str(write_plan(plan_text(task("a", "@exit 3", "    retries: 0\n"))))), 1)
    read_only = web()
    assert post(read_only + "api/retry/a") == 403 and '"csrf": null' in urllib.request.urlopen(
        read_only, timeout=5).read().decode()
    acting = web("--allow-actions")
    token = csrf_of(acting)
    assert post(acting + "api/retry/a") == 403  # a form on another site cannot send the header
    assert post(acting + "api/retry/a", {"X-Orchard-CSRF": "forged"}) == 403
    assert post(acting + "api/retry/a", {"X-Orchard-CSRF": token, "Origin": "http://evil.example"}) == 403
    assert post(acting + "api/merge/a", {"X-Orchard-CSRF": token}) == 404
    assert post(acting + "api/retry/nope", {"X-Orchard-CSRF": token}) == 409  # the command's own checks
    assert post(acting + "api/cancel/a", {"X-Orchard-CSRF": token}) == 200  # the page's own request goes through


def test_the_cancel_and_retry_buttons_do_what_the_commands_do(
        browser: Browser, web: Callable[..., str], orchard: Callable[..., Result],
        write_plan: Callable[[str], Path], repo: Path) -> None:
    go = repo.parent / "go"
    plan = write_plan(plan_text(task("s", f"@wait-for {go} 120\n@write s.txt s")
                                + task("w", "@write w.txt w", "    depends_on: [s]\n")
                                + task("f", "@if-attempt 1 @exit 3\n@write f.txt f", "    retries: 0\n")))
    run = subprocess.Popen([PYTHON, "-m", "orchard", "run", str(plan)], cwd=repo, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        browser.open(web("--allow-actions"))
        browser.wait_until("tr[data-task=s][data-status=running]")
        browser.wait_until("tr[data-task=f][data-status=failed]")
        browser.click("tr[data-task=s] button.cancel")
        browser.wait_until("tr[data-task=s][data-status=cancelled]")
        browser.wait_until("tr[data-task=w][data-status=blocked]")
        assert run.wait(timeout=30) == 1
    finally:
        if run.poll() is None:
            run.kill()
    browser.wait_until("#run", "failed")
    browser.click("tr[data-task=f] button.retry")  # `orchard retry f` in the background
    browser.wait_until("#notice", "started orchard retry f")
    browser.wait_until("tr[data-task=f][data-status=merged]", timeout=60)
    browser.screenshot("after-retry")
    statuses = {t["id"]: t["status"] for t in orchard("status", "--json").json()["tasks"]}
    assert statuses == {"s": "cancelled", "w": "blocked", "f": "merged"}


def test_run_with_web_serves_the_dashboard_while_it_runs(write_plan: Callable[[str], Path], repo: Path) -> None:
    go = repo.parent / "go"
    plan = write_plan(plan_text(task("s", f"@wait-for {go} 60\n@write s.txt s")))
    run = subprocess.Popen([PYTHON, "-m", "orchard", "run", "--web", "0", str(plan)], cwd=repo, text=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert run.stderr is not None
        found = re.search(r"serving (http://127\.0\.0\.1:\d+/)", run.stderr.readline())
        assert found
        url = found.group(1)

        def live() -> bool:
            with urllib.request.urlopen(url + "api/status", timeout=5) as response:
                doc = json.loads(response.read())
            return bool(doc) and doc["live"] and doc["tasks"][0]["status"] == "running"

        wait_for(live, "the dashboard shows the run live")
        go.touch()
        assert run.wait(timeout=60) == 0
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate()
    with pytest.raises(urllib.error.URLError):  # it ended with the command
        urllib.request.urlopen(url, timeout=2)
