"""The browser tracker in headless Chromium against a real collector on another origin.

Each test has its own browser context, so its own localStorage and anonymous id, and reads
back only the rows of that anonymous id from the collector's NDJSON files. Tests that need
to see or break the traffic point the tracker at a FaultProxy in front of the collector.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page
from playwright.sync_api import Error as PlaywrightError

from tests.browser.conftest import DemoPage, Keys
from tests.browser.fault_proxy import FaultProxy
from tests.browser.servers import (
    ROOT,
    CollectorServer,
    Row,
    SiteServer,
    count_names,
    names,
)

# Sends quickly, so tests do not wait for the default five-second flush interval.
FAST = {"flushIntervalMs": 200, "retryBaseMs": 200, "retryMaxMs": 2000}
PURCHASE = {"order_id": "o-1", "product_type": "book", "amount": "4.99", "currency": "EUR"}
API_FUNCTIONS = [
    "init",
    "track",
    "identify",
    "reset",
    "flush",
    "trackMedia",
    "bookOpened",
    "pageTurned",
    "chapterCompleted",
    "getAnonymousId",
]
GPC_ON = """Object.defineProperty(Navigator.prototype, "globalPrivacyControl", {
    get: () => true, configurable: true })"""


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def by_name(rows: list[Row], name: str) -> list[Row]:
    return sorted(
        (row for row in rows if row["event_name"] == name), key=lambda row: row["occurred_at"]
    )


def turn_pages(page: Page, *buttons: str) -> None:
    for button in buttons:
        page.click(f"#{button}")


def stored_queue(page: Page) -> list[dict[str, Any]]:
    """Return the events in every tracker queue in the page's localStorage."""
    return page.evaluate(
        """() => Object.keys(localStorage)
            .filter((key) => key.startsWith("bmt_q_"))
            .flatMap((key) => JSON.parse(localStorage.getItem(key)).events)"""
    )


def stored_keys(page: Page) -> list[str]:
    return page.evaluate("() => Object.keys(localStorage).filter((k) => k.startsWith('bmt_'))")


def test_collector_serves_tracker(collector_server: CollectorServer) -> None:
    with urllib.request.urlopen(collector_server.url + "/sdk.js", timeout=5) as response:
        served = response.read()
        content_type = response.headers["Content-Type"]

    assert served == (ROOT / "sdk" / "tracker.js").read_bytes()
    assert content_type.startswith("text/javascript")


def test_module_entry_exports_tracker(
    browser: Browser, tmp_path: Path, collector_server: CollectorServer
) -> None:
    sdk_server = SiteServer(tmp_path, ROOT / "sdk").start()
    try:
        page = browser.new_page()
        page.goto(sdk_server.origin + "/")
        exports = page.evaluate(
            """async (url) => {
                const module = await import(url);
                const names = Object.keys(module);
                return {
                    same: module.default === window.BookMediaTracker,
                    functions: names.filter((name) => typeof module[name] === "function"),
                };
            }""",
            sdk_server.origin + "/tracker.mjs",
        )
        page.close()
    finally:
        sdk_server.stop()

    assert exports["same"] is True
    assert sorted(exports["functions"]) == sorted(API_FUNCTIONS)


def test_page_turns_arrive_after_preflight(
    open_demo: Any, collector_server: CollectorServer, site: SiteServer
) -> None:
    preflights = collector_server.metric("collector_requests_total", path="/collect", status="204")
    demo: DemoPage = open_demo(collector_server.collect_url, **FAST)
    turn_pages(demo.page, "next", "next", "next", "prev")
    expected = ["session_start", "book_opened", "chapter_completed"] + ["page_turned"] * 4
    rows = collector_server.wait_for_rows(demo.anonymous_id, count_names(*expected))

    assert sorted(names(rows)) == sorted(expected)
    after = collector_server.metric("collector_requests_total", path="/collect", status="204")
    assert after > preflights
    assert len({row["event_id"] for row in rows}) == len(rows)
    for row in rows:
        assert uuid.UUID(row["event_id"])
        assert row["occurred_at"].endswith("Z")
        assert row["sent_at"] is not None
        assert parse_time(row["sent_at"]) >= parse_time(row["occurred_at"])
        received = parse_time(row["received_at"])
        corrected = parse_time(row["occurred_at_corrected"])
        assert abs(received - corrected) < timedelta(seconds=30)
        assert row["key_id"] == "browser-test"
        assert row["session_id"] == rows[0]["session_id"]
        assert row["user_id"] is None
        context = row["context"]
        assert context["platform"] == "web"
        assert context["page_url"].startswith(site.origin + "/index.html?")
        assert context["locale"]
        assert context["timezone"]

    turns = by_name(rows, "page_turned")
    assert [row["properties"]["page_number"] for row in turns] == [2, 3, 4, 3]
    directions = [row["properties"]["direction"] for row in turns]
    assert directions == ["forward", "forward", "forward", "backward"]
    for row in turns:
        assert row["properties"]["page_count"] == 6
        assert row["properties"]["seconds_on_page"] >= 0
        assert row["content"]["content_id"] == "book-lighthouse-almanac"
        assert row["content"]["content_type"] == "book"
    chapter = by_name(rows, "chapter_completed")[0]
    assert chapter["properties"] == {"chapter_index": 1, "chapter_count": 2}
    assert by_name(rows, "book_opened")[0]["properties"] == {"format": "web"}


def test_media_events_carry_positions(open_demo: Any, collector_server: CollectorServer) -> None:
    demo: DemoPage = open_demo(collector_server.collect_url, **FAST)
    # A click gives the page the user activation that autoplay rules ask for.
    demo.page.click("#next")
    for selector in ("#audio", "#video"):
        demo.page.eval_on_selector(selector, "element => element.play()")
        demo.page.wait_for_function(
            f"() => document.querySelector('{selector}').currentTime > 0.5", timeout=10_000
        )
        demo.page.eval_on_selector(selector, "element => element.pause()")
    expected = ["audio_played", "audio_paused", "video_played", "video_paused"]
    rows = collector_server.wait_for_rows(demo.anonymous_id, count_names(*expected))

    for kind in ("audio", "video"):
        played = by_name(rows, f"{kind}_played")
        paused = by_name(rows, f"{kind}_paused")
        assert len(played) == 1, names(rows)
        assert len(paused) == 1, names(rows)
        assert played[0]["properties"]["position_seconds"] < 0.5
        assert paused[0]["properties"]["position_seconds"] >= 0.5
        for row in played + paused:
            assert row["content"]["content_type"] == kind
            assert row["properties"]["duration_seconds"] == 4
            assert row["properties"]["playback_rate"] == 1
    assert by_name(rows, "video_paused")[0]["properties"]["quality"] == "120p"
    assert "quality" not in by_name(rows, "audio_paused")[0]["properties"]
    assert by_name(rows, "audio_played")[0]["content"]["content_id"] == "audio-almanac-sample"


def test_session_renews_after_inactivity(open_demo: Any, collector_server: CollectorServer) -> None:
    demo: DemoPage = open_demo(collector_server.collect_url, sessionTimeoutMs=1000, **FAST)
    collector_server.wait_for_rows(demo.anonymous_id, count_names("session_start", "book_opened"))
    time.sleep(1.3)
    demo.page.click("#next")
    expected = ["session_start", "session_start", "session_end", "book_opened", "page_turned"]
    rows = collector_server.wait_for_rows(demo.anonymous_id, count_names(*expected))

    assert sorted(names(rows)) == sorted(expected)
    first, second = by_name(rows, "session_start")
    opened = by_name(rows, "book_opened")[0]
    ended = by_name(rows, "session_end")[0]
    turned = by_name(rows, "page_turned")[0]
    assert first["session_id"] != second["session_id"]
    assert opened["session_id"] == first["session_id"]
    assert ended["session_id"] == first["session_id"]
    assert turned["session_id"] == second["session_id"]
    # The session ended at its last activity, the book_opened event.
    assert ended["occurred_at"] == opened["occurred_at"]
    assert 0 <= ended["properties"]["duration_seconds"] < 1


def test_identify_and_reset(open_demo: Any, collector_server: CollectorServer) -> None:
    demo: DemoPage = open_demo(collector_server.collect_url, **FAST)
    demo.page.evaluate("() => BookMediaTracker.identify('reader-42')")
    demo.page.click("#next")
    demo.page.evaluate("() => BookMediaTracker.reset()")
    new_anonymous_id = demo.page.evaluate("() => BookMediaTracker.getAnonymousId()")
    demo.page.click("#next")
    before = collector_server.wait_for_rows(
        demo.anonymous_id, count_names("session_start", "book_opened", "page_turned", "session_end")
    )
    after = collector_server.wait_for_rows(
        new_anonymous_id, count_names("session_start", "page_turned")
    )

    assert new_anonymous_id != demo.anonymous_id
    assert by_name(before, "page_turned")[0]["user_id"] == "reader-42"
    assert by_name(before, "session_end")[0]["user_id"] == "reader-42"
    assert sorted(names(after)) == ["page_turned", "session_start"]
    for row in after:
        assert row["user_id"] is None
        assert row["session_id"] != before[0]["session_id"]


def test_closing_page_sends_beacon(
    open_demo: Any, keys: Keys, collector_server: CollectorServer, proxy: FaultProxy
) -> None:
    # A long flush interval and a large batch leave the events queued until the page closes.
    demo: DemoPage = open_demo(proxy.url + "/collect", flushIntervalMs=600_000, batchSize=100)
    turn_pages(demo.page, "next", "next")
    time.sleep(0.3)
    assert proxy.posts() == []
    demo.page.close(run_before_unload=True)
    expected = ["session_start", "book_opened", "page_turned", "page_turned"]
    rows = collector_server.wait_for_rows(demo.anonymous_id, count_names(*expected))

    assert sorted(names(rows)) == sorted(expected)
    posts = proxy.posts()
    assert len(posts) == 1
    beacon = posts[0]
    assert beacon.content_type.startswith("text/plain")
    assert beacon.query.get("key") == [keys.site]
    assert "x-api-key" not in beacon.headers
    assert beacon.status == 200
    assert sorted(beacon.event_ids()) == sorted(row["event_id"] for row in rows)


def test_large_queue_leaves_in_beacon_chunks(
    open_demo: Any, context: BrowserContext, collector_server: CollectorServer, proxy: FaultProxy
) -> None:
    demo: DemoPage = open_demo(
        proxy.url + "/collect", flushIntervalMs=600_000, batchSize=1000, maxBeaconBytes=20_000
    )
    demo.page.evaluate(
        """() => {
            const book = { content_id: "book-bulk", page_count: 500 };
            for (let page = 1; page <= 120; page++) BookMediaTracker.pageTurned(book, page);
        }"""
    )
    queued_ids = {event["event_id"] for event in stored_queue(demo.page)}
    assert len(queued_ids) == 122
    demo.page.close(run_before_unload=True)
    # Events that did not fit the browser's keepalive budget stay stored for the next page.
    time.sleep(0.5)
    reopened = context.new_page()
    reopened.goto(demo.page.url)
    rows = collector_server.wait_for_rows(
        demo.anonymous_id, lambda rows: queued_ids <= {row["event_id"] for row in rows}
    )

    assert queued_ids <= {row["event_id"] for row in rows}
    beacons = [post for post in proxy.posts() if post.content_type.startswith("text/plain")]
    assert len(beacons) >= 2
    for beacon in beacons:
        assert len(beacon.body) <= 20_000 + 100
        assert beacon.status == 200


def test_503_then_recovery_loses_nothing(
    open_demo: Any, collector_server: CollectorServer, proxy: FaultProxy
) -> None:
    proxy.fail_next(3, status=503, retry_after="1")
    demo: DemoPage = open_demo(proxy.url + "/collect", **FAST)
    turn_pages(demo.page, "next", "next", "next")
    expected = ["session_start", "book_opened", "chapter_completed"] + ["page_turned"] * 3
    rows = collector_server.wait_for_rows(demo.anonymous_id, count_names(*expected), timeout=20)

    assert sorted(names(rows)) == sorted(expected)
    posts = proxy.posts()
    injected = [request for request in posts if request.injected]
    assert len(injected) == 3
    delivered = {
        event_id for request in posts if request.status == 200 for event_id in request.event_ids()
    }
    for request in injected:
        assert set(request.event_ids()) <= delivered
    # Retry-After: 1 is honoured: no retry comes sooner than a second after a 503.
    for failed, retry in zip(posts, posts[1:], strict=False):
        if failed.injected:
            assert retry.received_at - failed.received_at >= 0.95


def test_retry_duplicates_share_event_id(
    open_demo: Any, collector_server: CollectorServer, proxy: FaultProxy
) -> None:
    # The collector stores these requests but the tracker gets 503, as when a response is lost.
    proxy.fail_next(2, status=503, forward=True, retry_after="0")
    demo: DemoPage = open_demo(proxy.url + "/collect", batchSize=50, **FAST)
    turn_pages(demo.page, "next", "next")
    expected = ["session_start", "book_opened", "page_turned", "page_turned"]

    def delivered(rows: list[Row]) -> bool:
        posts = proxy.posts()
        return count_names(*expected)(rows) and any(
            request.status == 200 and not request.injected for request in posts
        )

    rows = collector_server.wait_for_rows(demo.anonymous_id, delivered, timeout=20)
    unique = {row["event_id"]: row for row in rows}

    assert sorted(names(list(unique.values()))) == sorted(expected)
    assert len(rows) > len(unique)
    for event_id in unique:
        copies = [row for row in rows if row["event_id"] == event_id]
        assert len({row["occurred_at"] for row in copies}) == 1
        assert len({json.dumps(row["properties"]) for row in copies}) == 1


def test_offline_reload_keeps_queue(
    open_demo: Any,
    context: BrowserContext,
    collector_server: CollectorServer,
    proxy: FaultProxy,
    site: SiteServer,
) -> None:
    demo: DemoPage = open_demo(proxy.url + "/collect", **FAST)
    page = demo.page
    collector_server.wait_for_rows(demo.anonymous_id, count_names("session_start", "book_opened"))
    # Chromium's offline emulation lets some requests of an unloading page through, so the
    # proxy also drops every connection, as an unreachable network would.
    proxy.set_down(True)
    context.set_offline(True)
    turn_pages(page, "next", "next", "next")
    page.evaluate("() => BookMediaTracker.flush()")
    queued = stored_queue(page)
    queued_ids = sorted(event["event_id"] for event in queued)
    assert len(queued_ids) == 4
    demo_url = page.url
    with pytest.raises(PlaywrightError, match="ERR_INTERNET_DISCONNECTED"):
        page.reload()
    context.set_offline(False)
    # The directory listing is a page of the site's origin without the tracker.
    page.goto(site.origin + "/media/")
    assert sorted(event["event_id"] for event in stored_queue(page)) == queued_ids
    stored = names(collector_server.rows_of(demo.anonymous_id))
    assert sorted(stored) == ["book_opened", "session_start"]
    proxy.set_down(False)
    page.goto(demo_url)
    expected = ["page_turned", "page_turned", "page_turned", "chapter_completed"]
    rows = collector_server.wait_for_rows(demo.anonymous_id, count_names(*expected))

    assert set(queued_ids) <= {row["event_id"] for row in rows}, (queued, rows)
    assert page.evaluate("() => BookMediaTracker.getAnonymousId()") == demo.anonymous_id
    page.wait_for_function(
        """(ids) => !Object.keys(localStorage)
            .filter((key) => key.startsWith("bmt_q_"))
            .flatMap((key) => JSON.parse(localStorage.getItem(key)).events)
            .some((event) => ids.includes(event.event_id))""",
        arg=queued_ids,
    )


def test_forbidden_origin_is_dropped_without_retry(
    open_demo: Any, keys: Keys, proxy: FaultProxy
) -> None:
    demo: DemoPage = open_demo(proxy.url + "/collect", key=keys.other, **FAST)
    demo.page.wait_for_function("() => document.querySelectorAll('#log li').length > 0")
    deadline = time.monotonic() + 10
    while not proxy.posts() and time.monotonic() < deadline:
        time.sleep(0.1)
    # Time for retries, which must not come. Waiting through Playwright also delivers
    # the console messages, which time.sleep would hold back.
    demo.page.wait_for_timeout(1500)

    assert [request.status for request in proxy.posts()] == [403]
    assert any("HTTP 403" in text for text in demo.console)
    assert stored_queue(demo.page) == []


def test_refused_purchase_keeps_other_events(
    open_demo: Any, collector_server: CollectorServer, proxy: FaultProxy
) -> None:
    demo: DemoPage = open_demo(proxy.url + "/collect", flushIntervalMs=600_000, batchSize=100)
    demo.page.click("#next")
    demo.page.evaluate(f"() => BookMediaTracker.track('purchase', {json.dumps(PURCHASE)})")
    demo.page.click("#next")
    demo.page.evaluate("() => BookMediaTracker.flush()")
    expected = ["session_start", "book_opened", "page_turned", "page_turned"]
    rows = collector_server.wait_for_rows(demo.anonymous_id, count_names(*expected))

    assert sorted(names(rows)) == sorted(expected)
    refused = [request for request in proxy.posts() if request.status == 403]
    assert len(refused) == 1
    assert len(refused[0].event_ids()) == 1
    assert any("HTTP 403" in text for text in demo.console)


@pytest.mark.parametrize("mode", ["anonymous", "off"])
def test_global_privacy_control(
    mode: str,
    open_demo: Any,
    context: BrowserContext,
    collector_server: CollectorServer,
    proxy: FaultProxy,
) -> None:
    context.add_init_script(GPC_ON)
    demo: DemoPage = open_demo(proxy.url + "/collect", globalPrivacyControl=mode, **FAST)
    demo.page.click("#next")
    demo.page.evaluate("() => BookMediaTracker.flush()")

    if mode == "off":
        time.sleep(1)
        assert demo.anonymous_id is None
        assert [request.method for request in proxy.requests] == ["GET"]
        assert stored_keys(demo.page) == []
        return
    rows = collector_server.wait_for_rows(
        demo.anonymous_id, count_names("session_start", "book_opened", "page_turned")
    )
    assert stored_keys(demo.page) == []
    for row in rows:
        assert "?" not in row["context"]["page_url"]
    demo.page.reload()
    demo.page.wait_for_function("() => document.body.dataset.tracker")
    assert demo.page.evaluate("() => BookMediaTracker.getAnonymousId()") != demo.anonymous_id
