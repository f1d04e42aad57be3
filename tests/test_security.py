"""Security properties of a running collector: what its logs never contain, the headers its
responses carry, and memory that a client cannot grow without bound."""

from __future__ import annotations

import gzip
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from collector.keys import add_key, hash_key
from tests.conftest import SITE_ORIGIN, CollectorProcess, Keys, make_event

# A unique string put in event fields, key names and headers; it must never reach the logs.
MARKER = "mk" + uuid.uuid4().hex
# Wrong keys shaped like real ones, so a log line that prints a presented key shows them.
WRONG_BROWSER_KEY = "pk_wrong" + uuid.uuid4().hex
WRONG_SERVER_KEY = "sk_wrong" + uuid.uuid4().hex
WRONG_BATCH_KEY = "pk_batch" + uuid.uuid4().hex
# The TCP peer address of most requests; any loopback address works as a source on Linux.
PEER_ADDRESS = "127.0.0.77"
# Addresses sent only as X-Forwarded-For values (documentation ranges, never contacted),
# with the forms that IP truncation stores for them.
FORWARDED_ADDRESSES = {
    "203.0.113.77": "203.0.113.0",
    "198.51.100.23": "198.51.100.0",
    "2001:db8:1234:5678::99": "2001:db8:1234::",
    "::ffff:192.0.2.33": "192.0.2.0",
}
# uvicorn logs the address it binds at start-up; that line is the only one that may name
# the loopback address the test clients also use.
BIND_LINE = "Uvicorn running on"


@dataclass
class Battery:
    """Log text of the collectors that served the requests, and the status codes seen."""

    logs: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    keys: list[str] = field(default_factory=list)


def marked_event(name: str = "page_turned") -> dict:
    """A valid event with the marker in every free-text field it has."""
    event = make_event(name, user_id="user-" + MARKER, anonymous_id="anon-" + MARKER)
    event["session_id"] = "session-" + MARKER
    event["context"] = {
        "page_url": f"https://site.example/{MARKER}",
        "referrer": f"https://referrer.example/?q={MARKER}",
        "user_agent": "agent " + MARKER,
        "app_version": MARKER[:30],
    }
    if "content" in event:
        event["content"]["title"] = "title " + MARKER
        event["content"]["author"] = "author " + MARKER
    if name == "purchase":
        event["properties"]["order_id"] = "order-" + MARKER
        event["properties"]["plan"] = "plan-" + MARKER
    return event


def run_battery(
    collector: CollectorProcess, keys: Keys, limited_key: str, battery: Battery
) -> None:
    """Send valid, invalid, unauthorized, oversized and malformed requests, from two peers."""
    peer = httpx.Client(transport=httpx.HTTPTransport(local_address=PEER_ADDRESS), timeout=15)
    loopback = httpx.Client(timeout=15)
    forwarded = ", ".join(FORWARDED_ADDRESSES)
    agent = f"Mozilla/5.0 {MARKER}"

    def post(
        body: object,
        key: str | None = None,
        *,
        client: httpx.Client = peer,
        path: str = "/collect",
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> None:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        sent = {
            "Content-Type": "application/json",
            "X-Forwarded-For": forwarded,
            "User-Agent": agent,
            "Referer": f"https://site.example/{MARKER}",
            **(headers or {}),
        }
        if key is not None:
            sent["X-API-Key"] = key
        response = client.post(collector.url + path, content=raw, headers=sent, params=params)
        battery.statuses[response.status_code] += 1

    def get(path: str, client: httpx.Client = peer) -> None:
        response = client.get(collector.url + path, headers={"X-Forwarded-For": forwarded})
        battery.statuses[response.status_code] += 1

    browser, server = keys.browser, keys.server
    # Accepted: one event, an array, a batch carrying its key, gzip, text/plain, debug.
    post(marked_event(), browser, headers={"Origin": SITE_ORIGIN})
    post(marked_event("purchase"), server, client=loopback)
    post([marked_event("book_opened"), marked_event("audio_played")], browser)
    post({"key": browser, "events": [marked_event("session_start")]})
    post(
        gzip.compress(orjson.dumps([marked_event()])),
        browser,
        headers={"Content-Encoding": "gzip"},
    )
    post([marked_event()], None, headers={"Content-Type": "text/plain"}, params={"key": browser})
    post([marked_event()], browser, path="/debug/collect")

    # Rejected events and bodies, with the marker in values, names and broken JSON.
    bad_currency = marked_event("purchase")
    bad_currency["properties"]["currency"] = MARKER
    post([bad_currency], server)
    unknown_field = marked_event()
    unknown_field["properties"][MARKER] = MARKER
    post([unknown_field], browser)
    post({"sent_at": MARKER, "events": [marked_event()]}, browser)
    post({MARKER: 1, "events": [marked_event()]}, browser)
    post(b'{"user_id": "' + MARKER.encode() + b'", ', browser)
    post(b"\x1f\x8b" + MARKER.encode(), browser, headers={"Content-Encoding": "gzip"})
    post(b"[" + b" " * (4 * 1024 * 1024) + b"]", browser, headers={"Content-Encoding": "gzip"})
    bomb = gzip.compress(b"[" + MARKER.encode() * (200_000) + b"]")
    post(bomb, browser, headers={"Content-Encoding": "gzip"})
    post(MARKER.encode() * 40_000, browser)
    post([marked_event() for _ in range(501)], browser)
    post(marked_event(), browser, headers={"Content-Type": "application/xml"})
    post(marked_event(), browser, headers={"Content-Encoding": "br"})
    # Bodies for the error paths of clock-skew correction and deep nesting, some of which
    # end in a 500 with a logged traceback. No log line may carry their payload either.
    for occurred_at, sent_at in (
        ("0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"),
        ("0001-01-01T00:00:00+23:59", "0001-01-01T00:00:00+23:59"),
    ):
        extreme = marked_event()
        extreme["occurred_at"] = occurred_at
        extreme["sent_at"] = sent_at
        post([extreme], browser)
    post((b'{"' + MARKER.encode() + b'":') * 300 + b"1" + b"}" * 300, browser)

    # Keys: missing, wrong (header, query, batch field), server key in the query string,
    # an origin the key does not allow, an event name the key may not send, a rate limit.
    post(marked_event(), None)
    post(marked_event(), WRONG_BROWSER_KEY)
    post(marked_event(), WRONG_SERVER_KEY, client=loopback)
    post(marked_event(), None, params={"key": WRONG_BROWSER_KEY})
    post({"key": WRONG_BATCH_KEY, "events": [marked_event()]})
    post(marked_event(), None, params={"key": server})
    post(marked_event(), browser, headers={"Origin": "https://evil.example"})
    post(marked_event("purchase"), browser)
    for _ in range(3):
        post([marked_event(), marked_event()], limited_key)

    # Preflight, a wrong method, the other endpoints, and a request uvicorn cannot parse.
    for origin in (SITE_ORIGIN, "https://evil.example"):
        response = peer.options(
            collector.url + "/collect",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        battery.statuses[response.status_code] += 1
    get("/collect")
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/sdk.js"):
        get(path, client=loopback)
    with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as sock:
        sock.sendall(b"GARBAGE\x01 /collect HTTP/1.1\r\nX-Trace: " + MARKER.encode() + b"\r\n\r\n")
        sock.recv(1024)
    peer.close()
    loopback.close()


@pytest.fixture(scope="module")
def battery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Battery]:
    """Run the request battery against two DEBUG-level collectors and collect their logs.

    One uses the TCP peer address, the other trusts one proxy hop and stores full addresses,
    so X-Forwarded-For values reach the rate limiter and the stored rows.
    """
    folder = tmp_path_factory.mktemp("security")
    keys = Keys(folder / "keys.json")
    limited = add_key(keys.path, "limited", "browser", [SITE_ORIGIN], rate_limit="3/minute")
    result = Battery(
        keys=[
            keys.browser,
            keys.server,
            limited,
            WRONG_BROWSER_KEY,
            WRONG_SERVER_KEY,
            WRONG_BATCH_KEY,
        ]
    )
    settings = [
        {},
        {"COLLECTOR_TRUSTED_PROXY_HOPS": "1", "COLLECTOR_IP_TRUNCATION": "full"},
    ]
    for number, extra in enumerate(settings):
        env = {
            "COLLECTOR_KEYS_FILE": str(keys.path),
            "COLLECTOR_LOG_LEVEL": "DEBUG",
            **extra,
        }
        process = CollectorProcess(folder / f"data-{number}", env).start()
        try:
            run_battery(process, keys, limited, result)
        finally:
            process.stop()
        result.logs.append(process.log())
    yield result


def lines_containing(battery: Battery, text: str) -> list[str]:
    return [line for log in battery.logs for line in log.splitlines() if text in line]


def test_battery_reached_each_outcome(battery: Battery) -> None:
    for status in (200, 204, 400, 401, 403, 405, 413, 415, 422, 429):
        assert battery.statuses[status] > 0, f"no {status} in {dict(battery.statuses)}"
    assert all(log.strip() for log in battery.logs)


def test_logs_hold_no_api_keys(battery: Battery) -> None:
    for key in battery.keys:
        assert lines_containing(battery, key) == [], f"key {key[:6]}... is logged"
        assert lines_containing(battery, hash_key(key)) == [], "a key's hash is logged"


def test_logs_hold_no_client_addresses(battery: Battery) -> None:
    for address, truncated in FORWARDED_ADDRESSES.items():
        assert lines_containing(battery, address) == []
        assert lines_containing(battery, truncated) == []
    assert lines_containing(battery, PEER_ADDRESS) == []
    assert lines_containing(battery, "127.0.0.0") == []
    loopback_lines = lines_containing(battery, "127.0.0.1")
    assert [line for line in loopback_lines if BIND_LINE not in line] == []


def test_logs_hold_no_payload(battery: Battery) -> None:
    assert lines_containing(battery, MARKER) == []


# Response headers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CollectorProcess, Keys]]:
    """One collector for the header tests, which only read responses."""
    folder = tmp_path_factory.mktemp("headers")
    keys = Keys(folder / "keys.json")
    process = CollectorProcess(folder / "data", {"COLLECTOR_KEYS_FILE": str(keys.path)})
    process.start()
    yield process, keys
    process.stop()


def collect_responses(collector: CollectorProcess, keys: Keys) -> dict[str, httpx.Response]:
    url = collector.url + "/collect"
    json_type = {"Content-Type": "application/json"}
    key = {**json_type, "X-API-Key": keys.browser}
    return {
        "200": httpx.post(url, content=orjson.dumps(make_event()), headers=key),
        "400": httpx.post(url, content=b"{", headers=key),
        "401": httpx.post(url, content=orjson.dumps(make_event()), headers=json_type),
        "403": httpx.post(url, content=orjson.dumps(make_event("purchase")), headers=key),
        "405": httpx.get(url),
        "413": httpx.post(url, content=b" " * (1024 * 1024 + 1), headers=key),
        "415": httpx.post(url, content=b"{}", headers={"Content-Type": "text/html"}),
        "422": httpx.post(url, content=b"[{}]", headers=key),
    }


def test_collect_responses_carry_security_headers(shared: tuple[CollectorProcess, Keys]) -> None:
    for status, response in collect_responses(*shared).items():
        assert str(response.status_code) == status
        assert response.headers["x-content-type-options"] == "nosniff", status
        assert response.headers["cache-control"] == "no-store", status
        assert response.headers["content-type"] == "application/json", status
        assert "access-control-allow-credentials" not in response.headers, status


def test_tracker_script_headers(shared: tuple[CollectorProcess, Keys]) -> None:
    collector, _ = shared
    response = httpx.get(collector.url + "/sdk.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


OTHER_PATHS = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/no-such-path"]


@pytest.mark.parametrize("path", OTHER_PATHS)
def test_other_responses_send_nosniff(shared: tuple[CollectorProcess, Keys], path: str) -> None:
    collector, _ = shared
    response = httpx.get(collector.url + path)
    assert response.headers.get("x-content-type-options") == "nosniff"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_status_responses_not_cached(shared: tuple[CollectorProcess, Keys], path: str) -> None:
    collector, _ = shared
    response = httpx.get(collector.url + path)
    assert response.headers.get("cache-control") == "no-store"


def test_docs_page_refuses_framing(shared: tuple[CollectorProcess, Keys]) -> None:
    collector, _ = shared
    response = httpx.get(collector.url + "/docs")
    assert response.status_code == 200
    assert response.headers.get("x-frame-options") == "DENY"
    policy = response.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in policy
    assert response.headers.get("referrer-policy") == "no-referrer"


# Memory ------------------------------------------------------------------------------------


# Requests with a 2 MiB User-Agent each; the bot check costs about 0.25 s of CPU per request.
AGENT_REQUESTS = 16


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def settled_resident_kib(pid: int) -> int:
    time.sleep(0.2)
    return resident_kib(pid)


def test_user_agents_do_not_grow_memory(collector: CollectorProcess, keys: Keys) -> None:
    """Distinct large User-Agent headers: the collector must not keep each of them.

    Headers over COLLECTOR_MAX_HEADER_BYTES (64 KiB) get 431; agents just under that limit
    are cut to 1024 characters before the cached bot check, so memory stays flat. A public
    browser key is enough to send them to /debug/collect, which no rate limit counts.
    """
    assert collector.process is not None
    pid = collector.process.pid
    body = orjson.dumps(make_event())
    with httpx.Client(timeout=15) as client:
        client.post(
            collector.url + "/debug/collect", content=body, headers={"X-API-Key": keys.browser}
        )
        huge = client.post(
            collector.url + "/debug/collect",
            content=body,
            headers={"X-API-Key": keys.browser, "User-Agent": "a" * (2 * 1024 * 1024)},
        )
        assert huge.status_code == 431
        before = settled_resident_kib(pid)
        for number in range(AGENT_REQUESTS * 30):
            agent = f"Mozilla/5.0 ({number}) " + "a" * (60 * 1024)
            response = client.post(
                collector.url + "/debug/collect",
                content=body,
                headers={"X-API-Key": keys.browser, "User-Agent": agent},
            )
            assert response.status_code == 200
    growth_mib = (settled_resident_kib(pid) - before) / 1024
    sent_mib = AGENT_REQUESTS * 30 * 60 / 1024
    assert growth_mib < sent_mib / 2, (
        f"memory grew {growth_mib:.0f} MiB for {sent_mib:.0f} MiB sent"
    )


def test_bandit_finds_nothing() -> None:
    """bandit passes on the package; each accepted finding has a nosec comment with its reason."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    bandit = shutil.which("bandit") or str(Path(sys.executable).parent / "bandit")
    result = subprocess.run(
        [bandit, "-q", "-c", "pyproject.toml", "-r", "collector"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
