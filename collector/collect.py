"""The collect endpoints as a plain ASGI handler.

``POST /collect`` and ``POST /debug/collect`` are the hot path, so they bypass FastAPI's
request objects and per-request middleware: the handler reads the raw body with its limits,
validates the bytes once, enriches, publishes and responds with pre-built headers.
"""

from __future__ import annotations

import itertools
import logging
import time
import zlib
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from collector import fastpath
from collector.deadlines import DeadlineExceeded, Deadlines
from collector.enrich import (
    RequestContext,
    TimeRangeError,
    client_address,
    is_bot,
    row_json,
    truncate_ip,
)
from collector.intake import BodyError, Rejection, parse_body
from collector.sinks.base import Message, SinkError, SinkOverloaded

if TYPE_CHECKING:
    from collector.keys import KeyEntry, KeyStore
    from collector.metrics import Metrics
    from collector.ratelimit import RateLimiter
    from collector.settings import Settings
    from collector.sinks.base import Sink

log = logging.getLogger("collector.collect")

COLLECT_PATH = "/collect"
DEBUG_PATH = "/debug/collect"
COLLECT_PATHS = frozenset({COLLECT_PATH, DEBUG_PATH})

_JSON_TYPES = frozenset({b"application/json", b"text/plain", b""})
_ENCODINGS = frozenset({b"", b"identity", b"gzip", b"x-gzip"})
_EXPOSED = b"Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, RateLimit-Policy"
_BASE_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"vary", b"Origin"),
]
(
    _CONTENT_TYPE,
    _CONTENT_LENGTH,
    _API_KEY,
    _USER_AGENT,
    _ORIGIN,
    _CONTENT_ENCODING,
    _FORWARDED_FOR,
    _PRIVACY,
) = range(8)
# Request headers the collect handler reads; uvicorn passes their names in lower case.
_READ_HEADERS = {
    b"content-type": _CONTENT_TYPE,
    b"content-length": _CONTENT_LENGTH,
    b"x-api-key": _API_KEY,
    b"user-agent": _USER_AGENT,
    b"origin": _ORIGIN,
    b"content-encoding": _CONTENT_ENCODING,
    b"x-forwarded-for": _FORWARDED_FOR,
    b"sec-gpc": _PRIVACY,
    b"dnt": _PRIVACY,
}
_request_ids = itertools.count(1)
_new_tuple = tuple.__new__
# Longest User-Agent kept and checked for bots, in characters.
MAX_USER_AGENT = 1024


class ClientDisconnected(Exception):
    """The client closed the connection before the body was read."""


class Refusal(Exception):
    """A whole request is refused with ``status``; ``headers`` are added to the response."""

    def __init__(
        self,
        status: int,
        message: str,
        reason: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.headers = headers or []


class CollectHandler:
    """Handle OPTIONS and POST on the collect paths."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyStore,
        sink: Sink,
        metrics: Metrics,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.sink = sink
        self.metrics = metrics
        self.limiter = limiter
        self.inflight = 0
        self.deadlines = Deadlines()
        self.max_future = timedelta(seconds=settings.max_future_seconds)
        self.max_past = timedelta(days=settings.max_past_days)
        self.retry_after = str(settings.retry_after_seconds).encode()
        self._preflight_headers = [
            (b"access-control-allow-methods", b"POST, OPTIONS"),
            (b"access-control-allow-headers", b"Content-Type, Content-Encoding, X-API-Key"),
            (b"access-control-max-age", str(settings.cors_max_age).encode()),
            (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
            (b"cache-control", b"no-store"),
            (b"content-length", b"0"),
        ]
        self.hot = metrics.hot

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter()
        path = scope["path"]
        origin: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
                break
        cors = self._cors_headers(origin)
        method = scope["method"]
        if method == "OPTIONS":
            await self._preflight(scope, send, cors)
            return
        if method != "POST":
            self._count(path, 405)
            await self._send_json(
                send,
                405,
                {"error": f"method {method} is not allowed; use POST"},
                [*cors, (b"allow", b"POST, OPTIONS")],
            )
            return
        request_id = next(_request_ids)
        try:
            status, payload, extra = await self._collect(scope, receive, path == DEBUG_PATH)
        except Refusal as refusal:
            status, payload, extra = refusal.status, {"error": refusal.message}, refusal.headers
            self.metrics.events_rejected.labels(refusal.reason).inc()
            log.info(
                "request refused",
                extra={
                    "request_id": request_id,
                    "status": status,
                    "reason": refusal.reason,
                    "error": refusal.message,
                    "path": path,
                },
            )
        except ClientDisconnected:
            self._count(path, 499)
            return
        except Exception:
            log.exception("unexpected error", extra={"request_id": request_id, "path": path})
            status, payload, extra = 500, {"error": "internal error"}, []
        self._count(path, status)
        await self._send_json(send, status, payload, cors + extra)
        self.hot.observe_latency(time.perf_counter() - started)

    def _count(self, path: str, status: int) -> None:
        labels = (path, str(status))
        counts = self.hot.requests
        counts[labels] = counts.get(labels, 0) + 1

    def _cors_headers(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        if origin is None:
            return []
        try:
            text = origin.decode("ascii")
        except UnicodeDecodeError:
            return []
        if not self.keys.allows_preflight_origin(text):
            return []
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", _EXPOSED),
        ]

    async def _preflight(self, scope: dict[str, Any], send: Any, cors: list) -> None:
        requested = any(name == b"access-control-request-method" for name, _ in scope["headers"])
        headers = list(cors)
        if cors and requested:
            headers.extend(self._preflight_headers)
        else:
            headers.append((b"content-length", b"0"))
        self._count(scope["path"], 204)
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _collect(
        self, scope: dict[str, Any], receive: Any, debug: bool
    ) -> tuple[int, dict[str, Any] | bytes, list[tuple[bytes, bytes]]]:
        settings = self.settings
        content_type = b""
        encoding = b""
        content_length = -1
        header_key: bytes | None = None
        forwarded_for: bytes | None = None
        user_agent: bytes | None = None
        origin: bytes | None = None
        privacy = False
        for name, value in scope["headers"]:
            # One dict lookup skips the headers that the collector does not read.
            kind = _READ_HEADERS.get(name)
            if kind is None:
                continue
            if kind == _CONTENT_TYPE:
                content_type = value.split(b";", 1)[0].strip().lower()
            elif kind == _CONTENT_LENGTH:
                try:
                    content_length = int(value)
                except ValueError:
                    raise Refusal(400, "Content-Length is not a number", "bad_header") from None
            elif kind == _API_KEY:
                header_key = value
            elif kind == _USER_AGENT:
                user_agent = value
            elif kind == _ORIGIN:
                origin = value
            elif kind == _CONTENT_ENCODING:
                encoding = value.strip().lower()
            elif kind == _FORWARDED_FOR:
                forwarded_for = value if forwarded_for is None else forwarded_for + b"," + value
            elif value.strip() == b"1":  # Sec-GPC or DNT
                privacy = True

        if content_type not in _JSON_TYPES:
            shown = content_type[:60].decode("latin-1")
            raise Refusal(
                415,
                f"Content-Type {shown} is not supported; send application/json or text/plain",
                "unsupported_media_type",
            )
        if encoding not in _ENCODINGS:
            shown = encoding[:40].decode("latin-1")
            raise Refusal(
                415,
                f"Content-Encoding {shown} is not supported; send gzip or no encoding",
                "unsupported_encoding",
            )
        if content_length > settings.max_body_bytes:
            raise Refusal(413, _too_large("body", settings.max_body_bytes), "body_too_large")

        key_text = _header_text(header_key)
        from_query = False
        if key_text is None and b"key=" in scope.get("query_string", b""):
            values = parse_qs(scope["query_string"].decode("latin-1")).get("key")
            if values:
                key_text = values[0]
                from_query = True

        entry: KeyEntry | None = None
        if key_text is not None:
            entry = self._authenticate(key_text, from_query, origin)

        try:
            with self.deadlines.limit(settings.body_read_timeout):
                body = await _read_body(receive, settings.max_body_bytes)
        except DeadlineExceeded:
            raise Refusal(
                408,
                f"the body was not received within {settings.body_read_timeout:g} seconds",
                "body_timeout",
                [(b"connection", b"close")],
            ) from None
        self.hot.body_bytes += len(body)
        if encoding in (b"gzip", b"x-gzip"):
            body = _gunzip(body, settings.max_decompressed_bytes)

        try:
            parsed = parse_body(body, settings.max_events_per_request, settings.max_event_bytes)
        except BodyError as exc:
            if entry is None:
                raise Refusal(
                    401, "API key missing: send X-API-Key or ?key=", "missing_key"
                ) from None
            raise Refusal(exc.status, exc.message, "bad_body") from None

        if entry is None:
            if parsed.batch_key is None:
                raise Refusal(401, "API key missing: send X-API-Key or ?key=", "missing_key")
            entry = self._authenticate(parsed.batch_key, False, origin)

        for name in {event.event_name for _, event in parsed.events}:
            if entry.allows_event(name):
                continue
            for index, event in parsed.events:
                if not entry.allows_event(event.event_name):
                    raise Refusal(
                        403,
                        f"events[{index}]: key {entry.id} may not send {event.event_name} events",
                        "event_not_allowed",
                    )

        peer = scope.get("client")
        address = client_address(
            forwarded_for.decode("latin-1") if forwarded_for is not None else None,
            peer[0] if peer else None,
            settings.trusted_proxy_hops,
        )
        rate_headers: list[tuple[bytes, bytes]] = []
        limiter = self.limiter
        if limiter is not None and not debug:
            if limiter.windows is not None:
                rate_headers = limiter.check_local(entry, address, max(parsed.count, 1))
            else:
                rate_headers = await limiter.check(entry, address, max(parsed.count, 1))

        agent = _header_text(user_agent)
        if agent is not None:
            # Truncated before the cached bot check: uvicorn passes headers of megabytes.
            agent = agent[:MAX_USER_AGENT]
        if privacy and settings.privacy_signals_drop:
            stored_ip, stored_agent = None, None
        else:
            stored_ip = truncate_ip(address, settings.ip_truncation) if address else None
            stored_agent = agent
        request = RequestContext(
            received_at=datetime.now(UTC),
            key_id=entry.id,
            client_ip=stored_ip,
            user_agent=stored_agent,
            is_bot=is_bot(agent),
        )

        messages: list[Message] = []
        accepted: dict[str, int] = {}
        rejected = parsed.rejected
        events = parsed.events
        # Events from the fast path are all structs, and their rows are built in one loop.
        # An event that gets None there goes through row_json, which raises its error.
        fast_rows: list[bytes | None] | None = None
        if events and isinstance(events[0][1], fastpath.Event):
            received_at = request.received_at
            fast_rows = fastpath.encode_rows(
                events,
                parsed.batch_sent_at,
                received_at,
                received_at - self.max_past,
                received_at + self.max_future,
                request.row_tail,
            )
        for position, (index, event) in enumerate(events):
            data = fast_rows[position] if fast_rows is not None else None
            try:
                if data is None:
                    data = row_json(
                        event, parsed.batch_sent_at, request, self.max_future, self.max_past
                    )
            except TimeRangeError as exc:
                rejected.append(_rejection(index, event, "occurred_at", str(exc)))
                continue
            except orjson.JSONEncodeError:
                rejected.append(_rejection(index, event, "", "the event contains invalid text"))
                continue
            name = event.event_name
            # tuple.__new__ skips the NamedTuple's Python-level constructor.
            messages.append(_new_tuple(Message, (data, name)))
            accepted[name] = accepted.get(name, 0) + 1
        if rejected:
            rejected.sort(key=lambda item: item.index)
            self.metrics.events_rejected.labels("invalid").inc(len(rejected))
            if self.sink.wants_invalid and not debug:
                self.sink.publish_invalid(_dead_letters(rejected, request))

        report: dict[str, Any] | bytes
        if rejected or debug or not messages:
            report = {
                "accepted": len(messages),
                "rejected": [item.as_dict() for item in rejected],
            }
            if debug:
                return 200, report, rate_headers
            if not messages:
                return 422, report, rate_headers
        else:
            report = _accepted_report(len(messages))

        # Many requests wait for the sink at once. Dropping the body and the decoded events
        # before waiting leaves only the rows alive, so their working set stays smaller.
        del body, parsed, events, event, rejected, request
        await self._publish(messages)
        totals = self.hot.accepted
        for name, count in accepted.items():
            totals[name] = totals.get(name, 0) + count
        return 200, report, rate_headers

    def _authenticate(self, key: str, from_query: bool, origin: bytes | None) -> KeyEntry:
        entry = self.keys.authenticate(key)
        if entry is None:
            raise Refusal(401, "API key is not valid", "invalid_key")
        if from_query and entry.kind == "server":
            raise Refusal(
                401,
                f"key {entry.id} is a server key and must be sent in the X-API-Key header, "
                "not the query string; rotate it, since URLs are logged",
                "server_key_in_query",
            )
        origin_text = origin.decode("latin-1") if origin is not None else None
        if not entry.allows_origin(origin_text):
            shown = (origin_text or "")[:100]
            raise Refusal(
                403, f"origin {shown} is not allowed for key {entry.id}", "origin_not_allowed"
            )
        return entry

    async def _publish(self, messages: list[Message]) -> None:
        retry = [(b"retry-after", self.retry_after)]
        count = len(messages)
        if self.inflight + count > self.settings.max_inflight_events:
            self.metrics.sink_errors.labels("overloaded").inc()
            raise Refusal(503, "the collector is overloaded; retry later", "overloaded", retry)
        if not self.sink.ready:
            self.metrics.sink_errors.labels("not_ready").inc()
            raise Refusal(503, "the sink is unavailable; retry later", "sink_not_ready", retry)
        self.inflight += count
        self.hot.inflight_events = self.inflight
        try:
            with self.deadlines.limit(self.settings.sink_confirm_timeout):
                await self.sink.publish(messages)
        except DeadlineExceeded:
            self.metrics.sink_errors.labels("timeout").inc()
            raise Refusal(
                503, "the sink did not confirm in time; retry later", "sink_timeout", retry
            ) from None
        except SinkOverloaded as exc:
            self.metrics.sink_errors.labels(exc.reason).inc()
            raise Refusal(503, f"{exc}; retry later", exc.reason, retry) from None
        except SinkError as exc:
            self.metrics.sink_errors.labels(exc.reason).inc()
            raise Refusal(503, f"the sink failed: {exc}; retry later", exc.reason, retry) from None
        finally:
            self.inflight -= count
            self.hot.inflight_events = self.inflight

    async def _send_json(
        self, send: Any, status: int, payload: dict[str, Any] | bytes, headers: list
    ) -> None:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *_BASE_HEADERS,
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


@lru_cache(maxsize=1024)
def _accepted_report(count: int) -> bytes:
    """Return the response body of a request whose ``count`` events were all accepted."""
    return orjson.dumps({"accepted": count, "rejected": []})


def _header_text(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    return text or None


def _too_large(what: str, limit: int) -> str:
    return f"the {what} is larger than {limit} bytes"


def _rejection(index: int, event: Any, field: str, message: str) -> Rejection:
    if isinstance(event, fastpath.Event):
        payload = fastpath.payload(event)
    else:
        payload = event.model_dump_json().encode()
    return Rejection(index, str(event.event_id), [{"field": field, "message": message}], payload)


# Maximum bytes of a rejected event kept in its dead-letter record.
DEAD_LETTER_PAYLOAD_BYTES = 4096


def _dead_letters(rejected: list[Rejection], request: RequestContext) -> list[bytes]:
    """Build one dead-letter record per rejected event: errors, key id, time, payload excerpt."""
    received_at = request.received_at
    records = []
    for item in rejected:
        payload = (item.payload or b"")[:DEAD_LETTER_PAYLOAD_BYTES]
        record = {
            "received_at": received_at,
            "key_id": request.key_id,
            "index": item.index,
            "event_id": item.event_id,
            "errors": item.errors,
            "payload": payload.decode("utf-8", "replace"),
            "payload_truncated": len(item.payload or b"") > DEAD_LETTER_PAYLOAD_BYTES,
        }
        records.append(orjson.dumps(record, option=orjson.OPT_UTC_Z))
    return records


async def _read_body(receive: Any, limit: int) -> bytes:
    """Read the request body, refusing it as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise Refusal(413, _too_large("body", limit), "body_too_large")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, stopping at ``limit`` output bytes so memory stays bounded."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise Refusal(400, f"the gzip body is corrupt: {exc}", "bad_gzip") from None
    if len(data) > limit or decompressor.unconsumed_tail:
        raise Refusal(413, _too_large("decompressed body", limit), "decompressed_too_large")
    if not decompressor.eof:
        raise Refusal(400, "the gzip body is truncated", "bad_gzip")
    if decompressor.unused_data.strip(b"\x00"):
        raise Refusal(400, "the gzip body has data after its end", "bad_gzip")
    return data
