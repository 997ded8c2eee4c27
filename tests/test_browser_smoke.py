"""The browser tests' own checks (tests/browser.py): the system's headless Chromium starts here, runs a page's
scripts, tells what a page requested, leaves screenshots under `.orchard-test/`, clicks through a page served on
loopback, fails (never skips) without the browser, and leaves no process behind."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from tests.browser import (
    PNG_SIGNATURE,
    SCREENSHOTS,
    Browser,
    exited,
    missing_browser,
    serve_directory,
    start_chromium,
    stop_chromium,
)

SCRIPTED = """<!doctype html>
<html><head><meta charset="utf-8"><title>smoke</title></head>
<body>
<main id="root" data-kind="report" data-tasks="3"><h1>orchard browser smoke test</h1></main>
<script>
  const made = document.createElement("p");
  made.className = "made";
  made.dataset.by = "script";
  made.textContent = "made by the page's script";
  document.getElementById("root").append(made);
</script>
</body></html>
"""

# A page asking for a stylesheet elsewhere: the refusing proxy stops it, and `requests()` must still tell.
REMOTE_STYLE = """<!doctype html>
<html><head><title>remote</title><link rel="stylesheet" href="https://cdn.example.invalid/style.css"></head>
<body><p>remote</p></body></html>
"""

CLICKABLE = """<!doctype html>
<html><head><meta charset="utf-8"><title>live</title><link rel="icon" href="data:,"></head>
<body>
<button id="go" type="button">Go</button> <span id="out">waiting</span>
<script>
  document.getElementById("go").addEventListener("click", async () => {
    const reply = await fetch("state.json");  // loopback passes the refusing proxy
    document.getElementById("out").textContent = (await reply.json()).message;
  });
</script>
</body></html>
"""


def test_a_file_page_runs_its_script_requests_only_itself_and_is_screenshotted(
        browser: Browser, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(SCRIPTED)
    browser.open(page, offline=True)
    browser.wait_until(".made", "made by the page's script")
    [root] = browser.find_all("#root")
    assert (root.get_attribute("data-kind"), root.get_attribute("data-tasks")) == ("report", "3")
    assert browser.find(".made").get_attribute("data-by") == "script"
    assert browser.title == "smoke"
    assert browser.requests() == [page.as_uri()]
    assert browser.console_errors() == []
    shot = browser.screenshot("page")
    assert shot == SCREENSHOTS / "test_a_file_page_runs_its_script_requests_only_itself_and_is_screenshotted-page.png"
    assert shot.read_bytes().startswith(PNG_SIGNATURE)


def test_requests_tells_what_a_page_asked_for_elsewhere(browser: Browser, tmp_path: Path) -> None:
    page = tmp_path / "remote.html"
    page.write_text(REMOTE_STYLE)
    browser.open(page)
    browser.wait_until(lambda: "https://cdn.example.invalid/style.css" in browser.requests())
    assert browser.requests()[0] == page.as_uri()
    browser.wait_until(lambda: any("style.css" in error for error in browser.console_errors()))


def test_offline_refuses_loopback_too(browser: Browser, tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{}")
    page = tmp_path / "offline.html"
    with serve_directory(tmp_path) as url:
        page.write_text(f"""<!doctype html><html><body><p id="out">waiting</p><script>
          fetch("{url}state.json", {{mode: "no-cors"}}).then(() => "reached", () => "refused")
            .then(word => {{ document.getElementById("out").textContent = word; }});
        </script></body></html>""")
        browser.open(page, offline=True)
        browser.wait_until("#out", "refused")
        browser.open(page)
        browser.wait_until("#out", "reached")


def test_a_loopback_page_reacts_to_a_click(browser: Browser, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text(CLICKABLE)
    (tmp_path / "state.json").write_text(json.dumps({"message": "clicked"}))
    with serve_directory(tmp_path) as url:
        browser.open(url)
        assert browser.find("#out").text == "waiting"
        browser.click("#go")
        browser.wait_until("#out", "clicked")
        asked = browser.requests()
        assert [one for one in asked if one != f"{url}favicon.ico"] == [url, f"{url}state.json"], asked
        assert browser.console_errors() == []
        browser.screenshot("clicked")


def test_a_wait_that_is_never_met_fails_with_what_it_waited_for(browser: Browser, tmp_path: Path) -> None:
    page = tmp_path / "still.html"
    page.write_text(SCRIPTED)
    browser.open(page)
    with pytest.raises(AssertionError, match=r"waited 0.2 s for '#root' with text 'never'"):
        browser.wait_until("#root", "never", timeout=0.2)


def test_a_missing_browser_fails_with_how_to_install_it(tmp_path: Path) -> None:
    message = missing_browser(chromium=tmp_path / "chromium")
    assert message == (f"headless Chromium not found at {tmp_path / 'chromium'}: run `make system` "
                       "(as root: apt-get install chromium chromium-driver)")
    assert missing_browser(driver=tmp_path / "chromedriver") == (
        f"chromedriver not found at {tmp_path / 'chromedriver'}: run `make system` "
        "(as root: apt-get install chromium chromium-driver)")


def test_stopping_leaves_no_browser_or_driver_process(tmp_path: Path) -> None:
    driver = start_chromium(tmp_path)
    assert driver.service.process is not None
    root = psutil.Process(driver.service.process.pid)
    processes = [root, *root.children(recursive=True)]
    assert any("chrom" in process.name() for process in processes[1:]), "no browser under chromedriver"
    stop_chromium(driver)
    assert [process.pid for process in processes if not exited(process)] == []
