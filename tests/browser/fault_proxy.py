"""An HTTP proxy in front of a real collector that records requests and injects failures.

It runs on a background thread of the test process and listens on 127.0.0.1. Each request
is forwarded to the collector unchanged, apart from hop-by-hop headers, unless a failure was
armed with ``fail_next``: then the proxy returns that status (and CORS headers, so the
browser lets the tracker read it), optionally after forwarding the request, which makes the
collector store events that the tracker believes failed. ``set_down`` makes it close every
connection without a response, which the browser reports as a network error.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)


@dataclass
class RecordedRequest:
    """One request the proxy received, with the status it returned."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    injected: bool = False
    received_at: float = field(default_factory=time.monotonic)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def event_ids(self) -> list[str]:
        """Return the event ids of a collect body (an event, an array or a batch object)."""
        if not self.body:
            return []
        payload: Any = json.loads(self.body)
        if isinstance(payload, dict):
            payload = payload.get("events", [payload])
        return [event["event_id"] for event in payload]


class FaultProxy:
    """Forward requests to ``upstream`` (host, port) and inject failures on demand."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._failures: list[tuple[int, bool, str]] = []
        self.down = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
                proxy._handle(self)

            def do_OPTIONS(self) -> None:  # noqa: N802
                proxy._handle(self)

            def do_POST(self) -> None:  # noqa: N802
                proxy._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(
        self, count: int, status: int = 503, forward: bool = False, retry_after: str = "1"
    ) -> None:
        """Make the next ``count`` POST requests fail with ``status``.

        With ``forward`` the request still reaches the collector first, as when a response
        is lost after the collector stored the events.
        """
        with self._lock:
            self._failures.extend([(status, forward, retry_after)] * count)

    def set_down(self, down: bool) -> None:
        """While down, close every connection without a response, as an unreachable host."""
        with self._lock:
            self.down = down

    def posts(self) -> list[RecordedRequest]:
        with self._lock:
            return [request for request in self.requests if request.method == "POST"]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        split = urlsplit(handler.path)
        request = RecordedRequest(
            method=handler.command,
            path=split.path,
            query=parse_qs(split.query),
            headers={name.lower(): value for name, value in handler.headers.items()},
            body=body,
        )
        failure = None
        with self._lock:
            self.requests.append(request)
            down = self.down
            if handler.command == "POST" and self._failures and not down:
                failure = self._failures.pop(0)
        if down:
            handler.close_connection = True
            return
        if failure is not None:
            status, forward, retry_after = failure
            if forward:
                self._forward(handler, request, body, relay=False)
            self._inject(handler, request, status, retry_after)
            return
        self._forward(handler, request, body, relay=True)

    def _forward(
        self, handler: BaseHTTPRequestHandler, request: RecordedRequest, body: bytes, relay: bool
    ) -> None:
        connection = http.client.HTTPConnection(*self.upstream, timeout=10)
        try:
            headers = {
                name: value
                for name, value in handler.headers.items()
                if name.lower() not in _HOP_BY_HOP
            }
            connection.request(handler.command, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            if not relay:
                return
            request.status = response.status
            handler.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        finally:
            connection.close()

    def _inject(
        self, handler: BaseHTTPRequestHandler, request: RecordedRequest, status: int, retry: str
    ) -> None:
        request.status = status
        request.injected = True
        data = json.dumps({"error": f"injected {status} from the test proxy"}).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Retry-After", retry)
        origin = handler.headers.get("Origin")
        if origin:
            handler.send_header("Access-Control-Allow-Origin", origin)
            handler.send_header("Access-Control-Expose-Headers", "Retry-After")
        handler.end_headers()
        handler.wfile.write(data)
