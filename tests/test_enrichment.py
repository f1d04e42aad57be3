"""Server-side enrichment: client address, truncation, bot flag and privacy signals."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from collector.enrich import client_address, is_bot, truncate_ip
from tests.conftest import Keys, make_event


@pytest.mark.parametrize(
    ("address", "mode", "stored"),
    [
        ("203.0.113.77", "truncate", "203.0.113.0"),
        ("203.0.113.77", "full", "203.0.113.77"),
        ("203.0.113.77", "none", None),
        ("2001:db8:abcd:12:34::1", "truncate", "2001:db8:abcd::"),
        ("::ffff:198.51.100.9", "truncate", "198.51.100.0"),
        ("not-an-address", "truncate", None),
        (" 192.0.2.5 ", "truncate", "192.0.2.0"),
    ],
)
def test_truncate_ip(address: str, mode: str, stored: str | None) -> None:
    assert truncate_ip(address, mode) == stored


@pytest.mark.parametrize(
    ("header", "hops", "expected"),
    [
        (None, 2, "10.9.9.9"),
        ("198.51.100.7, 130.211.0.1", 2, "198.51.100.7"),
        ("1.1.1.1, 2.2.2.2, 198.51.100.7, 130.211.0.1", 2, "198.51.100.7"),
        ("198.51.100.7, 130.211.0.1", 0, "10.9.9.9"),
        ("130.211.0.1", 2, "10.9.9.9"),
        ("198.51.100.7", 1, "198.51.100.7"),
    ],
)
def test_client_address(header: str | None, hops: int, expected: str) -> None:
    assert client_address(header, "10.9.9.9", hops) == expected


@pytest.mark.parametrize(
    ("agent", "bot"),
    [
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
        ("Mozilla/5.0 (compatible; bingbot/2.0)", True),
        ("facebookexternalhit/1.1", True),
        ("Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0 Safari/537.36", True),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36", False),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148", False),
        (None, False),
        ("", False),
    ],
)
def test_bot_flag(agent: str | None, bot: bool) -> None:
    assert is_bot(agent) is bot


def _post(url: str, key: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        url + "/collect",
        content=orjson.dumps(make_event()),
        headers={"X-API-Key": key, "Content-Type": "application/json", **headers},
        timeout=10,
    )


def test_bots_accepted_and_flagged(start_collector: Any, keys: Keys) -> None:
    collector = start_collector({"COLLECTOR_KEYS_FILE": str(keys.path)})
    agent = "Mozilla/5.0 (compatible; Googlebot/2.1)"
    assert _post(collector.url, keys.browser, {"User-Agent": agent}).status_code == 200
    row = collector.stored_rows()[0]
    assert row["is_bot"] is True
    assert row["user_agent"] == agent


def test_privacy_signals_drop_address_and_agent(start_collector: Any, keys: Keys) -> None:
    collector = start_collector(
        {"COLLECTOR_KEYS_FILE": str(keys.path), "COLLECTOR_PRIVACY_SIGNALS_DROP": "true"}
    )
    assert _post(collector.url, keys.browser, {"Sec-GPC": "1"}).status_code == 200
    assert _post(collector.url, keys.browser, {"DNT": "1"}).status_code == 200
    assert _post(collector.url, keys.browser, {}).status_code == 200
    rows = collector.stored_rows()
    assert [row["client_ip"] for row in rows] == [None, None, "127.0.0.0"]
    assert rows[0]["user_agent"] is None
    assert rows[2]["user_agent"] is not None


def test_full_address_setting(start_collector: Any, keys: Keys) -> None:
    collector = start_collector(
        {"COLLECTOR_KEYS_FILE": str(keys.path), "COLLECTOR_IP_TRUNCATION": "full"}
    )
    assert _post(collector.url, keys.browser, {}).status_code == 200
    assert collector.stored_rows()[0]["client_ip"] == "127.0.0.1"
