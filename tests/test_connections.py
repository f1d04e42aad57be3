"""Connection limits: idle sockets, slow headers, huge headers and the connection cap."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx

from tests.conftest import Keys


def _collector(start_collector: Any, keys: Keys, **settings: str) -> Any:
    env = {"COLLECTOR_KEYS_FILE": str(keys.path), "COLLECTOR_HEADER_READ_TIMEOUT": "1"}
    env.update({f"COLLECTOR_{name.upper()}": value for name, value in settings.items()})
    return start_collector(env)


def test_idle_connection_closed(start_collector: Any, keys: Keys) -> None:
    collector = _collector(start_collector, keys)
    with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(10) == b""
        assert time.monotonic() - started < 3


def test_slow_headers_get_408(start_collector: Any, keys: Keys) -> None:
    collector = _collector(start_collector, keys)
    with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as sock:
        sock.sendall(b"POST /collect HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.5)
        sock.sendall(b"X-Slow: 1\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 408")


def test_huge_header_gets_431(start_collector: Any, keys: Keys) -> None:
    collector = _collector(start_collector, keys)
    response = httpx.get(collector.url + "/healthz", headers={"X-Big": "a" * 200_000})
    assert response.status_code == 431
    assert httpx.get(collector.url + "/healthz").status_code == 200


def test_connection_cap_answers_503(start_collector: Any, keys: Keys) -> None:
    collector = _collector(start_collector, keys, max_connections="20")
    idle = [socket.create_connection(("127.0.0.1", collector.port)) for _ in range(20)]
    try:
        with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as extra:
            answer = extra.recv(500)
        assert answer.startswith(b"HTTP/1.1 503")
        assert b"retry-after: 2" in answer
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(collector.url + "/healthz").status_code == 200


def test_many_idle_connections_do_not_block_others(start_collector: Any, keys: Keys) -> None:
    collector = _collector(start_collector, keys)
    idle = [socket.create_connection(("127.0.0.1", collector.port)) for _ in range(300)]
    try:
        assert httpx.get(collector.url + "/healthz", timeout=5).status_code == 200
    finally:
        for sock in idle:
            sock.close()


class _RecordingTransport:
    """Records each write, as a socket would see them."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _cycle(method: str = "POST", keep_alive: bool = True) -> tuple[Any, _RecordingTransport]:
    import asyncio
    import logging

    from uvicorn.protocols.http.flow_control import FlowControl

    from collector.server import _OneWriteCycle

    transport = _RecordingTransport()
    cycle = _OneWriteCycle(
        scope={"method": method, "type": "http"},
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )
    return cycle, transport


def _respond(cycle: Any, *bodies: bytes) -> None:
    import asyncio

    async def run() -> None:
        length = str(sum(len(body) for body in bodies)).encode()
        headers = [(b"content-length", length)]
        await cycle.send({"type": "http.response.start", "status": 200, "headers": headers})
        for index, body in enumerate(bodies):
            more = index < len(bodies) - 1
            await cycle.send({"type": "http.response.body", "body": body, "more_body": more})

    asyncio.run(run())


def test_response_head_and_body_in_one_write() -> None:
    cycle, transport = _cycle()
    _respond(cycle, b'{"accepted":1}')
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b'\r\n\r\n{"accepted":1}')
    assert cycle.response_complete


def test_streamed_body_head_with_first_part() -> None:
    cycle, transport = _cycle()
    _respond(cycle, b"first", b"second")
    assert len(transport.writes) == 2
    assert transport.writes[0].endswith(b"\r\n\r\nfirst")
    assert transport.writes[1] == b"second"


def test_head_request_writes_head_alone() -> None:
    cycle, transport = _cycle(method="HEAD", keep_alive=False)
    _respond(cycle, b"")
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.closed


def test_whole_response_over_a_real_socket(start_collector: Any, keys: Keys) -> None:
    collector = _collector(start_collector, keys)
    with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        sock.sendall(b"HEAD /collect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 405")
        assert answer.endswith(b"\r\n\r\n")
