"""Headless Chromium (Debian's `chromium` + `chromium-driver`) driven by
Selenium, for the GINA portal tests; and a "canary" HTTP server on another
origin that records every request, so a test can prove that a page made
none to anywhere but the portal.

Nothing here downloads a browser or a driver: the paths are Debian's.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
from pathlib import Path

from .ports import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[3]
DOC_SHOTS = REPO / "docs" / "screenshots"


def make_driver(download_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--ignore-certificate-errors", "--window-size=1280,1000", "--lang=en-GB",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--disable-default-apps", "--disable-extensions"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {
        "download.default_directory": str(download_dir),
        "download.prompt_for_download": False,
        "intl.accept_languages": "en-GB,en",
    })
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    # Downloads in headless mode need an explicit permission.
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


def requested_urls(driver) -> list[str]:
    """Every URL the browser asked for since the last call (DevTools
    Network.requestWillBeSent), across frames."""
    urls = []
    for entry in driver.get_log("performance"):
        try:
            msg = json.loads(entry["message"])["message"]
        except (KeyError, ValueError):
            continue
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


class Shots:
    """Screenshots of every page, kept under the test's tmp folder; with
    SIEGEL_UPDATE_SCREENSHOTS=1 the main ones are copied to docs/screenshots."""

    def __init__(self, driver, folder: Path) -> None:
        self.driver = driver
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def take(self, name: str, main: bool = False) -> Path:
        p = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        # Full page height so long pages are not cut.
        height = self.driver.execute_script(
            "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)") or 1000
        self.driver.set_window_size(1280, min(max(int(height) + 40, 800), 3000))
        self.driver.save_screenshot(str(p))
        self.driver.set_window_size(1280, 1000)
        self.taken.append(p)
        if main and os.environ.get("SIEGEL_UPDATE_SCREENSHOTS") == "1":
            DOC_SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, DOC_SHOTS / f"gina-{name}.png")
        return p


class Canary:
    """An HTTP server on another origin that records each request path and
    answers every request with something a page could use (an image, a
    style sheet, a script)."""

    def __init__(self, attacker_page: str = "") -> None:
        self.port = free_port()
        self.requests: list[str] = []
        self.attacker_page = attacker_page
        canary = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                canary.requests.append(f"{self.command} {self.path}")
                if self.path.startswith("/attack"):
                    body, ctype = canary.attacker_page.encode(), "text/html"
                elif self.path.endswith(".css"):
                    body, ctype = b"body{background:red}", "text/css"
                elif self.path.endswith(".js"):
                    body, ctype = b"document.title='pwned'", "application/javascript"
                else:
                    # a 1x1 GIF
                    body = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c"
                                         "00000000010001000002024401003b")
                    ctype = "image/gif"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
