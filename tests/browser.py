"""Real-browser tests: the distribution's headless Chromium (`/usr/bin/chromium`) driven through its own chromedriver
by Selenium, never a browser or driver a tool downloads.

A pytest plugin (`tests/conftest.py` names it in `pytest_plugins`): the `browser` fixture gives each test a
`Browser`, a small typed wrapper over one Chromium shared by the test module, reset between tests. It opens pages
(`file://` reports or loopback dashboards), finds and clicks elements, waits on conditions (WebDriverWait, no
sleeps), saves screenshots into `.orchard-test/screenshots/` (git-ignored; a failed test leaves one named
`<test>-failed.png`), and reports the page's console errors and every URL it requested (the DevTools performance
log). Chromium starts behind a proxy that refuses every connection: loopback is exempt (Chromium's implicit bypass),
so a dashboard on 127.0.0.1 works while anything a page fetches from elsewhere fails and shows in `requests()`;
`open(..., offline=True)` cuts loopback too, for reports that must need no server at all.

A missing browser or driver fails the test with how to install them (`make system`), it never skips. Selenium is
imported only when a browser starts, so the test runs that never open one do not pay for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Generator, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTEFACTS = Path(__file__).resolve().parent.parent / ".orchard-test"
SCREENSHOTS = ARTEFACTS / "screenshots"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Headless as root on a closed network: no sandbox (root), no GPU, and none of the background connections (QUIC,
# component updates, sync) the network would refuse; shared memory in TMPDIR when /dev/shm is small (containers).
# The proxy, port 9 (discard) on loopback, refuses every connection: no request leaves this machine.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
    "--proxy-server=127.0.0.1:9", "--window-size=1280,900", "--hide-scrollbars", "--force-device-scale-factor=1",
)
FAILED = "failed"  # the name of the screenshot a failed test leaves
WAIT = 10.0  # seconds a wait or a click waits before the test fails


def missing_browser(chromium: Path = CHROMIUM, driver: Path = CHROMEDRIVER) -> str | None:
    """What is not installed of the browser and its driver, as the failure message to show; None when both are."""
    for what, path in (("headless Chromium", chromium), ("chromedriver", driver)):
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{what} not found at {path}: run `make system` (as root: apt-get install chromium chromium-driver)"
    return None


def start_chromium(workdir: Path) -> WebDriver:
    """A headless Chromium under the system chromedriver, with a new empty profile, its own HOME and the
    chromedriver log in `workdir`; Selenium Manager is kept offline and never consulted (explicit paths). Fails the
    calling test (never skips it) when the browser or the driver is not installed."""
    missing = missing_browser()
    if missing:
        pytest.fail(missing, pytrace=False)
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    for folder in ("profile", "home"):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={workdir / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    env = {**os.environ, "HOME": str(workdir / "home"), "SE_OFFLINE": "true", "SE_AVOID_STATS": "true"}
    env.pop("SE_CHROMEDRIVER", None)  # it would replace the explicit driver path
    log = workdir / "chromedriver.log"
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log), env=env)
    with pytest.MonkeyPatch.context() as patch:  # what Selenium reads in this process while it connects
        patch.setenv("SE_OFFLINE", "true")
        patch.setenv("SE_AVOID_STATS", "true")
        for name in ("SE_CHROMEDRIVER", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
            patch.delenv(name, raising=False)  # the explicit driver path; a direct connection to it on loopback
        try:
            return webdriver.Chrome(options=options, service=service)
        except WebDriverException as exc:
            tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
            pytest.fail(f"headless Chromium did not start: {exc.msg}\n" + "\n".join(tail), pytrace=False)


def stop_chromium(driver: WebDriver) -> None:
    """Quit the browser and its chromedriver, then wait until each of their processes has exited (killing what is
    left after 5 s), so no session outlives its tests."""
    processes: list[psutil.Process] = []
    pid = driver.service.process.pid if driver.service.process else None
    with contextlib.suppress(psutil.Error):
        if pid is not None:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
    try:
        driver.quit()
    finally:
        if not _all_exited(processes, timeout=5):
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            _all_exited(processes, timeout=5)


def exited(process: psutil.Process) -> bool:
    """Whether the process has ended: gone, or a zombie (Chromium's zygotes are reaped by init, in its own time)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _all_exited(processes: list[psutil.Process], timeout: float) -> bool:
    """Poll until every process has exited; False when some still runs after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not all(exited(process) for process in processes):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _safe(name: str) -> str:
    """`name` as a file name: runs of anything but letters, digits, ".", "_" and "-" become one "_"."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


class Element:
    """One element of the page: its text, its attributes, a click."""

    def __init__(self, element: WebElement) -> None:
        self._element = element

    @property
    def text(self) -> str:
        """The rendered text (what a person sees; hidden elements give "")."""
        return str(self._element.text)

    def get_attribute(self, name: str) -> str | None:
        """The attribute's (or property's) value, None when absent."""
        value = self._element.get_attribute(name)
        return None if value is None else str(value)

    def click(self) -> None:
        """Click it as a person would (it must be visible)."""
        self._element.click()


class Browser:
    """One test's view of the shared headless Chromium."""

    def __init__(self, driver: WebDriver, test_name: str) -> None:
        self._driver = driver
        self._name = _safe(test_name)
        self._requests: list[str] = []
        self._console: list[dict[str, Any]] = []

    @property
    def driver(self) -> WebDriver:
        """The Selenium driver underneath, for what this wrapper does not say."""
        return self._driver

    @property
    def title(self) -> str:
        """The page's title."""
        return str(self._driver.title)

    def open(self, target: str | Path, *, offline: bool = False) -> None:
        """Load a URL or a local file (as file://) and wait for it to load; `offline` refuses loopback as well for
        this page (file:// still loads). What `requests()` and `console_errors()` say starts again here."""
        from selenium.common.exceptions import WebDriverException

        url = target.resolve().as_uri() if isinstance(target, Path) else target
        self._driver.execute_cdp_cmd("Network.enable", {})
        self._driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        self._drain()
        self._requests.clear()
        self._console.clear()
        try:
            self._driver.get(url)
        except WebDriverException as exc:
            raise AssertionError(f"could not open {url}: {exc.msg}") from None

    def find_all(self, css: str) -> list[Element]:
        """Every element matching the CSS selector now (no waiting)."""
        from selenium.webdriver.common.by import By

        return [Element(found) for found in self._driver.find_elements(By.CSS_SELECTOR, css)]

    def find(self, css: str) -> Element:
        """The first element matching the CSS selector now; the test fails when there is none."""
        found = self.find_all(css)
        assert found, f"no element matches {css!r} on {self._driver.current_url}"
        return found[0]

    def click(self, css: str, *, timeout: float = WAIT) -> None:
        """Click the first element matching `css`, once it is visible and enabled (waiting up to `timeout` s)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions

        self._until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, css)),
                    f"a clickable {css!r}", timeout).click()

    def wait_until(self, condition: Callable[[], bool] | str, text: str | None = None, *,
                   timeout: float = WAIT) -> None:
        """Wait until `condition()` is true, or (a CSS selector) until an element matches it, whose text contains
        `text` when given; the test fails after `timeout` s with what it waited for."""
        if callable(condition):
            check, what = condition, getattr(condition, "__name__", "condition")
        else:
            check = partial(self._has_text, condition, text)
            what = condition if text is None else f"{condition!r} with text {text!r}"
        self._until(lambda _driver: check(), what, timeout)

    def evaluate(self, script: str, *args: Any) -> Any:
        """Run JavaScript in the page (`return …` gives its value back)."""
        return self._driver.execute_script(script, *args)

    def screenshot(self, name: str) -> Path:
        """Save the viewport as `.orchard-test/screenshots/<test>-<name>.png` and return its path."""
        path = self._screenshot_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self._driver.get_screenshot_as_png())
        return path

    def failed_screenshot(self) -> Path:
        """Where the screenshot of this test's failure goes."""
        return self._screenshot_path(FAILED)

    def console_errors(self) -> list[str]:
        """The console's errors (and failed loads) since the page was opened, as Chromium words them."""
        self._drain()
        return [str(entry["message"]) for entry in self._console if entry.get("level") == "SEVERE"]

    def requests(self) -> list[str]:
        """Every URL the page requested since it was opened, in order (the document itself first)."""
        self._drain()
        return list(self._requests)

    def reset(self) -> None:
        """Back to an empty page with nothing recorded or stored (between tests): no cookies, local storage or other
        site data of any origin, file:// included."""
        self.open("about:blank")
        self._driver.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": "*", "storageTypes": "all"})

    def _screenshot_path(self, name: str) -> Path:
        """`.orchard-test/screenshots/<test>-<name>.png`, both names made safe for a file name."""
        return SCREENSHOTS / f"{self._name}-{_safe(name)}.png"

    def _has_text(self, css: str, text: str | None) -> bool:
        """Whether some element matches `css` (and, with `text`, contains it)."""
        from selenium.common.exceptions import StaleElementReferenceException

        try:
            return any(text is None or text in found.text for found in self.find_all(css))
        except StaleElementReferenceException:  # replaced while read: look again at the next poll
            return False

    def _until(self, condition: Callable[[WebDriver], Any], what: str, timeout: float) -> Any:
        """WebDriverWait for `condition`, failing the test with `what` on timeout."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.wait import WebDriverWait

        try:
            return WebDriverWait(self._driver, timeout, poll_frequency=0.05).until(condition)
        except TimeoutException:
            raise AssertionError(f"waited {timeout:g} s for {what} on {self._driver.current_url}") from None

    def _drain(self) -> None:
        """Move what Chromium logged since the last look into this page's records."""
        for entry in self._log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self._requests.append(str(message["params"]["request"]["url"]))
        self._console.extend(self._log("browser"))

    def _log(self, kind: str) -> list[dict[str, Any]]:
        """The entries of one of chromedriver's logs since the last read (`get_log`, which Selenium leaves untyped)."""
        from selenium.webdriver.remote.command import Command

        return list(self._driver.execute(Command.GET_LOG, {"type": kind})["value"])


_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Keep each test's outcome on it, so that `browser` can leave a screenshot of a failed test."""
    report = yield
    if report.when == "call":
        item.stash[_CALL_REPORT] = report
    return report


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the test module (a fresh profile), quit with its chromedriver at the end."""
    workdir = tmp_path_factory.mktemp("chromium")
    driver = start_chromium(workdir)
    try:
        yield driver
    finally:
        stop_chromium(driver)
        shutil.rmtree(workdir / "profile", ignore_errors=True)


@pytest.fixture
def browser(chromium: WebDriver, request: pytest.FixtureRequest) -> Iterator[Browser]:
    """The module's Chromium on an empty page for this test; a failed test leaves `<test>-failed.png` (removed when
    the test runs again)."""
    page = Browser(chromium, request.node.name)
    page.failed_screenshot().unlink(missing_ok=True)
    page.reset()
    yield page
    report = request.node.stash.get(_CALL_REPORT, None)
    if report is not None and report.failed:
        with contextlib.suppress(Exception):  # the screenshot is a courtesy: never hide the test's own failure
            page.screenshot(FAILED)


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve `root` over HTTP on 127.0.0.1 (an ephemeral port, a thread) and give its base URL ending in "/"."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """No request lines on the test's stderr."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, name="serve-directory", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
