"""One fuzz input through the collector's body decoding, checking that only documented
errors occur.

The first byte of an input selects how the rest travels; the remaining bytes are the body:

- bit 0: the body is gzip-compressed (``Content-Encoding: gzip``);
- bits 1-2: Content-Type ``application/json``, ``text/plain;charset=UTF-8``, none, or
  ``TEXT/PLAIN``;
- bit 3: through the whole ASGI collect handler with an in-memory sink, instead of calling
  ``_gunzip``, ``parse_body`` and ``row_json`` directly;
- bit 4: with the handler, post to ``/debug/collect`` instead of ``/collect``.

Documented outcomes are a BodyError with status 400 or 413, a Refusal with a 4xx status,
per-event rejections, and TimeRangeError and JSONEncodeError from
``row_json`` (the handler turns both into rejections). Anything else raises
AssertionError or escapes, which atheris reports as a crash with the input saved.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from collector.collect import CollectHandler, Refusal, _gunzip
from collector.enrich import RequestContext, TimeRangeError, row_json
from collector.intake import BodyError, ParsedBody, _parse_slow, parse_body
from collector.keys import KeyEntry, KeyStore, hash_key
from collector.metrics import Metrics
from collector.settings import Settings
from collector.sinks.base import Message, Sink

GZIP = 0x01
CONTENT_TYPES = (b"application/json", b"text/plain;charset=UTF-8", None, b"TEXT/PLAIN")
HANDLER = 0x08
DEBUG = 0x10

SERVER_KEY = "sk_fuzz_server_key"
# Seeds carry times around this instant, so the direct path reaches the row encoding. The handler
# path uses the real clock, where the seeds' events fall outside the 30-day window.
RECEIVED_AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
MAX_FUTURE = timedelta(seconds=SETTINGS.max_future_seconds)
MAX_PAST = timedelta(days=SETTINGS.max_past_days)


class MemorySink(Sink):
    """A sink that keeps published messages and dead-letter records, and is always ready."""

    name = "memory"
    wants_invalid = True

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.dead_letters: list[bytes] = []

    async def publish(self, messages: list[Message]) -> None:
        self.messages.extend(messages)

    def publish_invalid(self, records: list[bytes]) -> None:
        self.dead_letters.extend(records)

    @property
    def ready(self) -> bool:
        return True


_SINK = MemorySink()
_KEYS = KeyStore([KeyEntry(id="fuzz", sha256=hash_key(SERVER_KEY), kind="server")])
_HANDLER = CollectHandler(SETTINGS, _KEYS, _SINK, Metrics(), limiter=None)
_LOOP = asyncio.new_event_loop()
# The handler logs every refusal at INFO and every 500 with a traceback. The checks read
# the status code instead, so log output is turned off.
logging.disable(logging.CRITICAL)


def check_input(data: bytes) -> None:
    """Decode one fuzz input; raise AssertionError on any undocumented outcome."""
    if not data:
        return
    mode, body = data[0], data[1:]
    content_type = CONTENT_TYPES[(mode >> 1) & 0x03]
    if mode & HANDLER:
        _check_handler(body, bool(mode & GZIP), content_type, bool(mode & DEBUG))
    else:
        _check_direct(body, bool(mode & GZIP))


def _check_direct(body: bytes, gzipped: bool) -> None:
    if gzipped:
        try:
            body = _gunzip(body, SETTINGS.max_decompressed_bytes)
        except Refusal as refusal:
            assert refusal.status in (400, 413), f"gzip refusal {refusal.status}"
            return
    try:
        parsed = parse_body(body, SETTINGS.max_events_per_request, SETTINGS.max_event_bytes)
    except BodyError as error:
        assert error.status in (400, 413), f"BodyError status {error.status}"
        return
    _check_parsed(parsed)
    if not parsed.rejected and parsed.events:
        _check_slow_path_agrees(body, parsed)
    request = RequestContext(RECEIVED_AT, "fuzz", "127.0.0.0", "fuzz-agent", False)
    for _, event in parsed.events:
        try:
            row_json(event, parsed.batch_sent_at, request, MAX_FUTURE, MAX_PAST)
        except (TimeRangeError, orjson.JSONEncodeError):
            continue


def _check_parsed(parsed: ParsedBody) -> None:
    indexes = [index for index, _ in parsed.events] + [item.index for item in parsed.rejected]
    assert sorted(indexes) == list(range(parsed.count)), f"indexes {indexes}, {parsed.count}"
    for item in parsed.rejected:
        assert item.errors, f"rejection {item.index} has no errors"
        for error in item.errors:
            assert isinstance(error["field"], str)
            assert isinstance(error["message"], str)


def _check_slow_path_agrees(body: bytes, fast: ParsedBody) -> None:
    """The per-event path must accept the same events and give the same rows."""
    slow = _parse_slow(body, SETTINGS.max_events_per_request, SETTINGS.max_event_bytes)
    assert len(slow.events) == len(fast.events), "the per-event path dropped an event"
    assert _rows(slow) == _rows(fast), "the per-event path changed an event"


def _rows(parsed: ParsedBody) -> list[object]:
    request = RequestContext(RECEIVED_AT, "fuzz", None, None, False)
    rows: list[object] = []
    for _, event in parsed.events:
        try:
            rows.append(orjson.loads(row_json(event, None, request, MAX_FUTURE, MAX_PAST)))
        except (TimeRangeError, orjson.JSONEncodeError) as error:
            rows.append(type(error).__name__)
    return rows


def _check_handler(body: bytes, gzipped: bool, content_type: bytes | None, debug: bool) -> None:
    headers = [(b"x-api-key", SERVER_KEY.encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    if gzipped:
        headers.append((b"content-encoding", b"gzip"))
    path = "/debug/collect" if debug else "/collect"
    del _SINK.messages[:], _SINK.dead_letters[:]
    status, report = _LOOP.run_until_complete(_post(path, headers, body))
    published = len(_SINK.messages)
    assert status < 500, f"status {status}: {report}"
    if status in (200, 422):
        expected = 0 if debug else report["accepted"]
        assert published == expected, f"report {report}, published {published}"
        dead_letters = 0 if debug else len(report["rejected"])
        assert len(_SINK.dead_letters) == dead_letters, f"report {report}, dead letters"
        for record in _SINK.dead_letters:
            assert isinstance(orjson.loads(record)["errors"], list)
    else:
        assert 400 <= status < 500, f"status {status}"
        assert published == 0, f"status {status} but {published} events published"


async def _post(path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, Any]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": headers,
        "query_string": b"",
        "client": ("127.0.0.1", 40000),
    }
    requests = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return requests.pop(0) if requests else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await _HANDLER(scope, receive, send)
    status = sent[0]["status"]
    return status, orjson.loads(sent[1]["body"])
