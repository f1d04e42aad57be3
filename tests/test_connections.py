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
