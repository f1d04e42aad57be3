"""uvicorn's httptools protocol with the connection limits uvicorn lacks.

uvicorn (0.55) closes an idle keep-alive connection after ``timeout_keep_alive``, but it
never times out a connection that sends no request, or sends its headers slowly, and
httptools accepts request headers of any size. Behind Google's load balancer the front end
absorbs such clients; run anywhere else, a few hundred idle sockets would fill the
connection limit and megabyte headers would grow memory. This protocol adds:

- a header deadline: a connection must deliver a request's complete headers within
  ``header_timeout`` seconds of opening or of starting the request, else it is closed
  (with 408 when part of a request arrived). One sweep per event loop checks the deadlines,
  so a connection is closed up to a quarter of the timeout (at most 1 s) after it;
- a size cap: a request whose URL and headers pass ``max_header_bytes`` gets 431;
- a connection cap: beyond ``max_connections`` open connections, a new one gets a JSON 503
  with Retry-After and is closed, so the process never accepts more work than it can hold.

It also writes each response's status line and headers together with the first part of its
body. uvicorn writes them separately, and on loopback the second socket write cost about
9 us of CPU per response on the benchmark machine (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from collector.settings import Settings


class _HeaderTooLarge(Exception):
    pass


def _response(status: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: close\r\n"
        + extra
        + b"\r\n"
        + body
    )


class _HeldWrites:
    """A stand-in transport that keeps what is written, for the response head."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class _PrefixedWrites:
    """The real transport, with ``prefix`` written in front of the first write."""

    __slots__ = ("prefix", "transport")

    def __init__(self, transport: asyncio.Transport, prefix: bytes) -> None:
        self.transport = transport
        self.prefix = prefix

    def write(self, data: bytes) -> None:
        self.transport.write(self.prefix + data if self.prefix else data)
        self.prefix = b""

    def flush(self) -> None:
        if self.prefix:
            self.transport.write(self.prefix)
            self.prefix = b""

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class _OneWriteCycle(RequestResponseCycle):
    """A request cycle that sends the response head with the first body message."""

    _head: bytes | None = None

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            transport = self.transport
            head_writes = _HeldWrites()
            self.transport = head_writes  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = transport
            self._head = head_writes.data
            return
        head = self._head
        if head is None:
            await super().send(message)
            return
        self._head = None
        transport = self.transport
        prefixed = _PrefixedWrites(transport, head)
        self.transport = prefixed  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            self.transport = transport
            # A HEAD response, or a disconnect, writes no body: the head goes out alone.
            if not self.disconnected:
                prefixed.flush()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a header deadline, a header size cap and a connection cap."""

    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 2000
    retry_after: int = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Loop time by which the pending request headers must be complete, or None.
        self._header_due: float | None = None
        self._header_bytes = 0
        self._request_started = False
        self._too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            body = b'{"error": "too many open connections; retry later"}'
            extra = b"retry-after: " + str(self.retry_after).encode() + b"\r\n"
            transport.write(_response(b"503 Service Unavailable", body, extra))
            transport.close()
            return
        self._header_due = self.loop.time() + self.header_timeout
        _HeaderSweep.ensure(self.loop, self.connections, self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._header_due = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._request_started = True
        if self._header_due is None:
            self._header_due = self.loop.time() + self.header_timeout

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # The count is inline because this runs for every header of every request.
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.max_header_bytes:
            self._too_large = True
            raise _HeaderTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._header_due = None
        self._request_started = False
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and type(cycle) is RequestResponseCycle:
            cycle.__class__ = _OneWriteCycle

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            body = b'{"error": "request headers are larger than %d bytes"}' % self.max_header_bytes
            self.transport.write(_response(b"431 Request Header Fields Too Large", body))
            self.transport.close()
            return
        super().send_400_response(msg)

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._too_large = True
            # httptools wraps this in HttpParserCallbackError; uvicorn then calls
            # send_400_response, which responds 431 above and closes the connection.
            raise _HeaderTooLarge

    def _header_deadline(self) -> None:
        self._header_due = None
        if self.transport.is_closing():
            return
        if self._request_started:
            body = b'{"error": "request headers were not received in time"}'
            self.transport.write(_response(b"408 Request Timeout", body))
        self.transport.close()


class _HeaderSweep:
    """One timer per event loop that closes connections past their header deadline.

    A timer per request would be scheduled and cancelled on every request. The sweep runs
    every quarter of the timeout (at most every second) while connections are open, so a
    deadline is enforced up to that much late.
    """

    _running: ClassVar[dict[asyncio.AbstractEventLoop, _HeaderSweep]] = {}

    def __init__(
        self, loop: asyncio.AbstractEventLoop, connections: set[Any], interval: float
    ) -> None:
        self.loop = loop
        self.connections = connections
        self.interval = interval

    @classmethod
    def ensure(cls, loop: asyncio.AbstractEventLoop, connections: set[Any], timeout: float) -> None:
        """Start the sweep of ``loop``'s connections unless it runs already."""
        if loop not in cls._running:
            sweep = cls(loop, connections, min(1.0, timeout / 4))
            cls._running[loop] = sweep
            loop.call_later(sweep.interval, sweep.run)

    def run(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            due = getattr(connection, "_header_due", None)
            if due is not None and due <= now:
                connection._header_deadline()
        if self.connections and not self.loop.is_closed():
            self.loop.call_later(self.interval, self.run)
        else:
            del self._running[self.loop]


def protocol_for(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """Return the protocol class configured from ``settings``."""
    return type(
        "CollectorHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout": settings.header_read_timeout,
            "max_header_bytes": settings.max_header_bytes,
            "max_connections": settings.max_connections,
            "retry_after": settings.retry_after_seconds,
        },
    )
