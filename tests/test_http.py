"""The HTTP contract, against a real uvicorn process on loopback."""

from __future__ import annotations

import gzip
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import SITE_ORIGIN, CollectorProcess, Keys, make_event, now_iso


def post(
    collector: CollectorProcess,
    body: Any,
    key: str | None,
    path: str = "/collect",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        sent["X-API-Key"] = key
    return httpx.post(collector.url + path, content=raw, headers=sent, params=params, timeout=10)


def test_single_event_lands_on_disk(collector: CollectorProcess, keys: Keys) -> None:
    event = make_event("page_turned", user_id="reader-7")
    response = post(collector, event, keys.browser)
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "rejected": []}
    rows = collector.stored_rows()
    assert [row["event_id"] for row in rows] == [event["event_id"]]
    row = rows[0]
    assert row["key_id"] == "web"
    assert row["properties"] == event["properties"]
    assert row["content"]["content_id"] == "book-1"
    assert row["client_ip"] == "127.0.0.0"
    assert row["user_agent"].startswith("python-httpx")
    assert row["schema_version"] == "1"
    assert row["received_at"].endswith("Z")


def test_array_batch_and_text_plain(collector: CollectorProcess, keys: Keys) -> None:
    array = [make_event(name) for name in ("session_start", "book_opened", "page_turned")]
    batch = {"sent_at": now_iso(), "events": [make_event("audio_played")]}
    assert post(collector, array, keys.browser).json()["accepted"] == 3
    assert post(collector, batch, keys.browser).json()["accepted"] == 1
    beacon = post(
        collector,
        [make_event("video_paused")],
        None,
        headers={"Content-Type": "text/plain;charset=UTF-8"},
        params={"key": keys.browser},
    )
    assert beacon.status_code == 200
    no_type = httpx.post(
        collector.url + "/collect",
        params={"key": keys.browser},
        content=orjson.dumps(make_event()),
        timeout=10,
    )
    assert no_type.status_code == 200
    assert len(collector.stored_rows()) == 6


def test_purchase_amount_stored_exactly(collector: CollectorProcess, keys: Keys) -> None:
    event = make_event("purchase")
    event["properties"]["amount"] = 19.99
    assert post(collector, event, keys.server).status_code == 200
    assert collector.stored_rows()[0]["properties"]["amount"] == "19.99"


def test_mixed_batch_returns_rejections(collector: CollectorProcess, keys: Keys) -> None:
    good = make_event()
    bad = make_event()
    bad["properties"]["page_number"] = 0
    response = post(collector, [good, bad], keys.browser)
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 1
    assert body["rejected"][0]["index"] == 1
    assert body["rejected"][0]["event_id"] == bad["event_id"]
    assert body["rejected"][0]["errors"][0]["field"] == "properties.page_number"
    assert [row["event_id"] for row in collector.stored_rows()] == [good["event_id"]]


def test_all_invalid_is_422(collector: CollectorProcess, keys: Keys) -> None:
    bad = make_event(occurred_at="2026-01-01T00:00:00")
    response = post(collector, [bad], keys.browser)
    assert response.status_code == 422
    assert response.json()["accepted"] == 0
    assert response.json()["rejected"][0]["errors"][0]["field"] == "occurred_at"
    assert collector.stored_rows() == []


def test_time_window_enforced(collector: CollectorProcess, keys: Keys) -> None:
    future = make_event(occurred_at=now_iso(3600))
    old = make_event(occurred_at=now_iso(-40 * 86400))
    response = post(collector, [future, old], keys.browser)
    assert response.status_code == 422
    fields = [item["errors"][0]["field"] for item in response.json()["rejected"]]
    assert fields == ["occurred_at", "occurred_at"]


def test_clock_skew_corrected(collector: CollectorProcess, keys: Keys) -> None:
    # The client clock runs two hours fast: occurred_at and sent_at are both ahead.
    event = make_event(occurred_at=now_iso(7200 - 30))
    response = post(collector, {"sent_at": now_iso(7200), "events": [event]}, keys.browser)
    assert response.status_code == 200
    row = collector.stored_rows()[0]
    corrected = row["occurred_at_corrected"]
    received = row["received_at"]
    skew = _seconds(received) - _seconds(corrected)
    assert 25 < skew < 40
    assert row["occurred_at"] != corrected


def _seconds(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"", 400),
        (b"null", 400),
        (b"[]", 400),
        (b'"text"', 400),
        (b'{"events": 3}', 400),
    ],
)
def test_bad_bodies(collector: CollectorProcess, keys: Keys, body: bytes, status: int) -> None:
    response = post(collector, body, keys.browser)
    assert response.status_code == status
    assert "error" in response.json()


def test_auth_errors(collector: CollectorProcess, keys: Keys) -> None:
    assert post(collector, make_event(), None).status_code == 401
    wrong = post(collector, make_event(), "pk_wrong")
    assert wrong.status_code == 401
    assert "pk_wrong" not in wrong.text
    server_in_query = post(collector, make_event(), None, params={"key": keys.server})
    assert server_in_query.status_code == 401
    assert keys.server not in server_in_query.text
    batch_key = {"key": keys.browser, "events": [make_event()]}
    assert post(collector, batch_key, None).status_code == 200


def test_origin_and_event_kind_checks(collector: CollectorProcess, keys: Keys) -> None:
    evil = post(collector, make_event(), keys.browser, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    assert "access-control-allow-origin" not in evil.headers
    sub = post(collector, make_event(), keys.browser, headers={"Origin": "https://a.example.org"})
    assert sub.status_code == 200
    purchase = post(
        collector, make_event("purchase"), keys.browser, headers={"Origin": SITE_ORIGIN}
    )
    assert purchase.status_code == 403
    assert purchase.headers["access-control-allow-origin"] == SITE_ORIGIN
    assert post(collector, make_event("purchase"), keys.server).status_code == 200


def test_cors_preflight(collector: CollectorProcess) -> None:
    allowed = httpx.options(
        collector.url + "/collect",
        headers={
            "Origin": SITE_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
    )
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == SITE_ORIGIN
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
    assert int(allowed.headers["access-control-max-age"]) > 0
    assert "origin" in allowed.headers["vary"].lower()
    assert "access-control-allow-credentials" not in allowed.headers
    unknown = httpx.options(
        collector.url + "/collect",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in unknown.headers


def test_error_responses_carry_cors(collector: CollectorProcess) -> None:
    response = post(collector, make_event(), None, headers={"Origin": SITE_ORIGIN})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == SITE_ORIGIN
    assert "Retry-After" in response.headers["access-control-expose-headers"]


def test_content_type_and_encoding(collector: CollectorProcess, keys: Keys) -> None:
    form = post(collector, make_event(), keys.browser, headers={"Content-Type": "application/xml"})
    assert form.status_code == 415
    brotli = post(collector, make_event(), keys.browser, headers={"Content-Encoding": "br"})
    assert brotli.status_code == 415
    packed = gzip.compress(orjson.dumps([make_event(), make_event()]))
    ok = post(collector, packed, keys.browser, headers={"Content-Encoding": "GZIP"})
    assert ok.status_code == 200
    assert ok.json()["accepted"] == 2
    corrupt = post(collector, packed[:-8], keys.browser, headers={"Content-Encoding": "gzip"})
    assert corrupt.status_code == 400
    garbage = post(
        collector, b"\x1f\x8bnot gzip", keys.browser, headers={"Content-Encoding": "gzip"}
    )
    assert garbage.status_code == 400


def test_gzip_bomb_refused(collector: CollectorProcess, keys: Keys) -> None:
    bomb = gzip.compress(b"[" + b" " * (50 * 1024 * 1024) + b"]")
    assert len(bomb) < 200 * 1024
    response = post(collector, bomb, keys.browser, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413


def test_body_limits(collector: CollectorProcess, keys: Keys) -> None:
    declared = post(collector, b"x" * (1024 * 1024 + 10), keys.browser)
    assert declared.status_code == 413
    many = post(collector, [make_event() for _ in range(501)], keys.browser)
    assert many.status_code == 413


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM line")


def test_streamed_large_body_refused_early(collector: CollectorProcess, keys: Keys) -> None:
    """A 50 MB chunked body gets 413 before it is all sent, and server memory stays flat."""
    assert collector.process is not None
    before = _peak_rss_kib(collector.process.pid)
    block = b"x" * 65536
    chunk = b"%x\r\n" % len(block) + block + b"\r\n"
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as sock:
        sock.sendall(
            b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-API-Key: " + keys.browser.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.setblocking(False)
        try:
            while sent < 50 * 1024 * 1024 and b"\r\n\r\n" not in answer:
                try:
                    answer += sock.recv(4096)
                except BlockingIOError:
                    pass
                sock.sendall(chunk)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError, BlockingIOError):
            pass
        sock.setblocking(True)
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            try:
                data = sock.recv(4096)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert sent < 50 * 1024 * 1024
    growth_mib = (_peak_rss_kib(collector.process.pid) - before) / 1024
    assert growth_mib < 16, f"peak memory grew by {growth_mib:.1f} MiB"
    assert httpx.get(collector.url + "/healthz").status_code == 200


def test_debug_collect_publishes_nothing(collector: CollectorProcess, keys: Keys) -> None:
    bad = make_event()
    bad["properties"]["page_number"] = -1
    response = post(collector, [make_event(), bad], keys.browser, path="/debug/collect")
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert len(response.json()["rejected"]) == 1
    only_bad = post(collector, [bad], keys.browser, path="/debug/collect")
    assert only_bad.status_code == 200
    assert collector.stored_rows() == []


def test_health_ready_metrics(collector: CollectorProcess, keys: Keys) -> None:
    assert httpx.get(collector.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(collector.url + "/readyz").status_code == 200
    post(collector, make_event(), keys.browser)
    post(collector, b"nope", keys.browser)
    httpx.get(collector.url + "/collect")
    metrics = httpx.get(collector.url + "/metrics").text
    assert 'collector_events_accepted_total{event_name="page_turned"} 1.0' in metrics
    assert 'collector_requests_total{path="/collect",status="200"} 1.0' in metrics
    assert 'collector_requests_total{path="/collect",status="400"} 1.0' in metrics
    assert 'collector_requests_total{path="/collect",status="405"} 1.0' in metrics
    assert "collector_request_duration_seconds_count 2.0" in metrics
    assert "collector_body_bytes_total" in metrics
    assert "collector_inflight_events 0.0" in metrics
    assert keys.browser not in metrics


def test_openapi_documents_collect(collector: CollectorProcess) -> None:
    spec = httpx.get(collector.url + "/openapi.json").json()
    assert "post" in spec["paths"]["/collect"]
    assert "/debug/collect" in spec["paths"]


def test_method_not_allowed(collector: CollectorProcess) -> None:
    response = httpx.get(collector.url + "/collect")
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]


def test_client_disconnect_mid_body(collector: CollectorProcess, keys: Keys) -> None:
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(
            b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-API-Key: " + keys.browser.encode() + b"\r\nContent-Length: 5000\r\n\r\n[{"
        )
        time.sleep(0.1)
    event = make_event()
    assert post(collector, event, keys.browser).status_code == 200
    assert [row["event_id"] for row in collector.stored_rows()] == [event["event_id"]]


def test_logs_are_json_without_secrets(collector: CollectorProcess, keys: Keys) -> None:
    post(collector, make_event(), keys.browser)
    post(collector, make_event(), "pk_not_a_real_key")
    post(collector, b"{broken", keys.browser)
    collector.stop()
    lines = [line for line in collector.log().splitlines() if line.startswith("{")]
    assert lines
    for line in lines:
        record = orjson.loads(line)
        assert "severity" in record
        assert "message" in record
    text = collector.log()
    assert keys.browser not in text
    assert "pk_not_a_real_key" not in text
    assert "stopped" in text


def test_slow_body_gets_408(start_collector: Any, keys: Keys) -> None:
    collector = start_collector(
        {"COLLECTOR_KEYS_FILE": str(keys.path), "COLLECTOR_BODY_READ_TIMEOUT": "1"}
    )
    with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as sock:
        sock.sendall(
            b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-API-Key: " + keys.browser.encode() + b"\r\nContent-Length: 100\r\n\r\n[{"
        )
        started = time.monotonic()
        answer = sock.recv(4096)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408")
    assert waited < 4
    event = make_event()
    assert post(collector, event, keys.browser).status_code == 200
