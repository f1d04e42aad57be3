"""Rate limits counted in events, per key and per client IP, with memory and real Redis storage."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from collector.keys import add_key
from tests.conftest import free_port, make_event


class RedisServer:
    """A real redis-server on a loopback port, restartable on the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (apt-get install -y redis-server)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        import socket

        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def limited_keys(tmp_path: Path) -> tuple[Path, str, str]:
    path = tmp_path / "limited-keys.json"
    small = add_key(path, "small", "browser", ["https://site.example"], rate_limit="30/minute")
    large = add_key(path, "large", "browser", ["https://site.example"], rate_limit="100000/minute")
    return path, small, large


def send(url: str, key: str, count: int, forwarded_for: str | None = None) -> httpx.Response:
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    body = orjson.dumps([make_event() for _ in range(count)])
    return httpx.post(url + "/collect", content=body, headers=headers, timeout=10)


def test_key_limit_counts_events(start_collector: Any, limited_keys: tuple) -> None:
    path, small, _ = limited_keys
    collector = start_collector({"COLLECTOR_KEYS_FILE": str(path)})
    assert send(collector.url, small, 20).status_code == 200
    refused = send(collector.url, small, 20)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == "30"
    assert len(refused.headers.get_list("ratelimit-limit")) == 1
    assert "error" in refused.json()
    assert len(collector.stored_rows()) == 20


def test_preflight_not_counted(start_collector: Any, limited_keys: tuple) -> None:
    path, small, _ = limited_keys
    collector = start_collector({"COLLECTOR_KEYS_FILE": str(path)})
    for _ in range(50):
        httpx.options(
            collector.url + "/collect",
            headers={"Origin": "https://site.example", "Access-Control-Request-Method": "POST"},
        )
    assert send(collector.url, small, 30).status_code == 200


def test_forged_forwarded_for_is_one_client(start_collector: Any, limited_keys: tuple) -> None:
    path, _, large = limited_keys
    collector = start_collector(
        {
            "COLLECTOR_KEYS_FILE": str(path),
            "COLLECTOR_TRUSTED_PROXY_HOPS": "2",
            "COLLECTOR_IP_RATE_LIMIT": "25/minute",
        }
    )
    # The balancer appends "<client>,<balancer>"; the client controls only what is left of it.
    statuses = [
        send(collector.url, large, 10, f"10.0.0.{n}, 198.51.100.7, 130.211.0.1").status_code
        for n in range(4)
    ]
    assert statuses == [200, 200, 429, 429]
    other = send(collector.url, large, 10, "203.0.113.9, 130.211.0.1")
    assert other.status_code == 200
    ips = {row["client_ip"] for row in collector.stored_rows()}
    assert ips == {"198.51.100.0", "203.0.113.0"}


def test_two_processes_share_redis_budget(
    start_collector: Any, limited_keys: tuple, redis_server: RedisServer
) -> None:
    path, small, _ = limited_keys
    env = {"COLLECTOR_KEYS_FILE": str(path), "COLLECTOR_RATE_LIMIT_STORAGE": redis_server.url}
    first = start_collector(env)
    second = start_collector(env)
    assert send(first.url, small, 20).status_code == 200
    assert send(second.url, small, 10).status_code == 200
    assert send(second.url, small, 1).status_code == 429
    assert send(first.url, small, 1).status_code == 429


def test_redis_outage_fails_open_then_recovers(
    start_collector: Any, limited_keys: tuple, redis_server: RedisServer
) -> None:
    path, small, _ = limited_keys
    collector = start_collector(
        {"COLLECTOR_KEYS_FILE": str(path), "COLLECTOR_RATE_LIMIT_STORAGE": redis_server.url}
    )
    assert send(collector.url, small, 30).status_code == 200
    assert send(collector.url, small, 1).status_code == 429
    redis_server.stop()
    during = [send(collector.url, small, 5).status_code for _ in range(5)]
    assert during == [200] * 5
    metrics = httpx.get(collector.url + "/metrics").text
    assert "collector_rate_limit_storage_up 0.0" in metrics
    redis_server.start()
    time.sleep(1.2)
    # A fresh Redis has no counters, so the budget starts again, then limits apply.
    statuses = [send(collector.url, small, 10).status_code for _ in range(5)]
    assert 200 in statuses
    assert statuses[-1] == 429
    assert "collector_rate_limit_storage_up 1.0" in httpx.get(collector.url + "/metrics").text
    collector.stop()
    outage_lines = [line for line in collector.log().splitlines() if "storage failed" in line]
    assert len(outage_lines) == 1


def test_redis_outage_fail_closed(
    start_collector: Any, limited_keys: tuple, redis_server: RedisServer
) -> None:
    path, small, _ = limited_keys
    collector = start_collector(
        {
            "COLLECTOR_KEYS_FILE": str(path),
            "COLLECTOR_RATE_LIMIT_STORAGE": redis_server.url,
            "COLLECTOR_RATE_LIMIT_FAIL_OPEN": "false",
        }
    )
    redis_server.stop()
    response = send(collector.url, small, 1)
    assert response.status_code == 503
    assert "retry-after" in response.headers


def test_batch_larger_than_key_limit_is_413(start_collector: Any, limited_keys: tuple) -> None:
    path, small, _ = limited_keys
    collector = start_collector({"COLLECTOR_KEYS_FILE": str(path)})
    response = send(collector.url, small, 31)
    assert response.status_code == 413
    assert "retry-after" not in response.headers
    assert send(collector.url, small, 30).status_code == 200
