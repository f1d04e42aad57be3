"""Fixtures for the browser tests: headless Chromium, the demo site and a collector.

The demo site and the collector listen on different loopback ports, so they are different
origins and every tracker request is cross-origin, with CORS preflights as in production.
Chromium comes from the system package (``apt-get install -y chromium``); the tests fail,
not skip, when it is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from collector.keys import add_key
from tests.browser.fault_proxy import FaultProxy
from tests.browser.servers import CollectorServer, SiteServer

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A browser key for an origin other than the demo site's, to provoke 403.
OTHER_ORIGIN = "https://other.example"


class Keys:
    """The keys file of the browser tests and the keys it contains."""

    def __init__(self, path: Path, site_origin: str) -> None:
        self.path = path
        self.site = add_key(path, "browser-test", "browser", [site_origin])
        self.other = add_key(path, "other-site", "browser", [OTHER_ORIGIN])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteServer]:
    server = SiteServer(tmp_path_factory.mktemp("site")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, site: SiteServer) -> Keys:
    return Keys(tmp_path_factory.mktemp("keys") / "keys.json", site.origin)


@pytest.fixture(scope="module")
def collector_server(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys
) -> Iterator[CollectorServer]:
    server = CollectorServer(tmp_path_factory.mktemp("collector"), keys.path).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` "
            "or set CHROMIUM_PATH"
        )
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield instance
        instance.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile: empty localStorage, so a new anonymous id for each test."""
    instance = browser.new_context()
    yield instance
    instance.close()


@pytest.fixture
def proxy(collector_server: CollectorServer) -> Iterator[FaultProxy]:
    instance = FaultProxy("127.0.0.1", collector_server.port).start()
    yield instance
    instance.stop()


@dataclass
class DemoPage:
    """The demo page, the tracker's anonymous id and the console messages so far."""

    page: Page
    anonymous_id: str | None
    console: list[str] = field(default_factory=list)


@pytest.fixture
def open_demo(context: BrowserContext, site: SiteServer, keys: Keys) -> Any:
    """Open the demo page sending to ``endpoint``; return it once the tracker runs."""

    def open_page(endpoint: str, key: str | None = None, **options: Any) -> DemoPage:
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(site.demo_url(endpoint, key or keys.site, **options))
        page.wait_for_function("() => document.body.dataset.tracker", timeout=10_000)
        anonymous_id = page.evaluate("() => BookMediaTracker.getAnonymousId()")
        return DemoPage(page, anonymous_id, console)

    return open_page
