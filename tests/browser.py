"""Debian's headless Chromium driven through its ChromeDriver, with what the page did recorded."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
    # As if offline: any host name but the loopback address fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def require_chromium() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: apt-get install chromium chromium-driver "
            "(./test.sh installs them)",
            pytrace=False,
        )


@dataclass
class PageEvents:
    """Network failures and console errors seen so far (drained from Chromium's logs)."""

    failed_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    websocket_frames_sent: list[dict[str, Any]] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)


def read_log(driver: webdriver.Chrome, kind: str) -> list[dict[str, Any]]:
    """What Chromium logged of `kind` since the last read (selenium leaves it untyped)."""
    entries: list[dict[str, Any]] = driver.get_log(kind)  # type: ignore[no-untyped-call]
    return entries


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[webdriver.Chrome]:
    require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        # What Chromium does on its own at start (its new-tab page) is not the page's doing.
        driver.get("about:blank")
        read_log(driver, "performance")
        read_log(driver, "browser")
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def drain(driver: webdriver.Chrome, events: PageEvents) -> PageEvents:
    """Move what Chromium logged since the last call into `events`."""
    for entry in read_log(driver, "performance"):
        message = json.loads(entry["message"])["message"]
        method, params = message["method"], message.get("params", {})
        if method == "Network.requestWillBeSent":
            events.urls[params["requestId"]] = params["request"]["url"]
        elif method == "Network.loadingFailed":
            url = events.urls.get(params["requestId"], "?")
            events.failed_requests.append(f"{params.get('errorText')} {url}")
        elif method == "Network.responseReceived":
            response = params["response"]
            if response["status"] >= 400:
                events.failed_requests.append(f"{response['status']} {response['url']}")
        elif method == "Network.webSocketCreated":
            events.websockets.append(params["url"])
        elif method == "Network.webSocketFrameSent":
            events.websocket_frames_sent.append(json.loads(params["response"]["payloadData"]))
    for entry in read_log(driver, "browser"):
        if entry["level"] == "SEVERE":
            events.console_errors.append(entry["message"])
    return events
