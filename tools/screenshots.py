"""Write the README's screenshots, docs/report.png and docs/dashboard.png, from a fresh demo run: its HTML report
and `orchard web` on it, in the headless Chromium of the browser tests (`tests/browser.py`).
`python tools/screenshots.py` (after `make system`); the images are committed, so run it when the pages change."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import start_chromium, stop_chromium  # noqa: E402 - after the path it is found on

SIZE = (1100, 760)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="orchard-shots-") as scratch:
        work = Path(scratch)
        subprocess.run([sys.executable, "-m", "orchard", "demo", "--dir", str(work / "demo"), "--json"],
                       check=True, stdout=subprocess.DEVNULL)
        repo = work / "demo" / "sample"
        report = next((repo / ".orchard" / "runs").glob("*/report.html"))
        web = subprocess.Popen([sys.executable, "-m", "orchard", "web", "--port", "0"], cwd=repo, text=True,
                               stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        driver = start_chromium(work / "chromium")
        try:
            driver.set_window_size(*SIZE)
            driver.get(report.as_uri())
            (ROOT / "docs" / "report.png").write_bytes(driver.get_screenshot_as_png())
            assert web.stdout is not None
            url = re.search(r"http://\S+", web.stdout.readline())
            assert url, "orchard web printed no address"
            driver.get(url.group(0))
            driver.implicitly_wait(5)
            driver.find_element("css selector", "tr[data-status=merged]")
            (ROOT / "docs" / "dashboard.png").write_bytes(driver.get_screenshot_as_png())
        finally:
            stop_chromium(driver)
            web.terminate()
            web.wait(timeout=10)
    print("wrote docs/report.png and docs/dashboard.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
