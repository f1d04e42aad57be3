"""Fault matrix: real collector processes under load while a dependency or a client misbehaves.

Every case checks the delivery invariant: each event whose request got a 200 is in the sink
at least once, and after its copies are loaded into DuckDB with collector.warehouse it
appears exactly once in staging.stg_events. Load threads send the same events again after a
503, 408 or a transport error, so the sink does receive some events twice. Each case also
checks that no request got a 5xx other than 503 and, unless the case stops it, that the
collector process is still running. All traffic goes to 127.0.0.1, and every loop is
bounded in time.
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import CollectorProcess, Keys, make_event
from tests.faults.delivery import (
    SinkCopies,
    build_staging,
    compare,
    read_local_sink,
    write_pubsub_rows,
)
from tests.faults.load import Load
from tests.faults.system import (
    CollectorOnPort,
    Tmpfs,
    connect,
    open_fds,
    read_response,
    request_head,
    scrape,
    status_of,
    wait_for_status,
)
from tests.pubsub_server import PubSubTestServer
from tests.pubsub_server.fixtures import pubsub_server_fixture
from tests.test_ratelimit import RedisServer

pytestmark = pytest.mark.timeout(60)

TOPIC = "projects/fault-project/topics/events"
pubsub_server = pubsub_server_fixture()

Launch = Callable[..., CollectorProcess]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.process.send_signal(signal.SIGCONT)
    server.stop()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Tmpfs]:
    """A 16 MiB tmpfs on tmp_path/data. Request it before ``launch`` so it unmounts last."""
    mount = Tmpfs(tmp_path / "data").mount()
    try:
        yield mount
    finally:
        mount.unmount()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start collector processes, on a given port if one is passed. All are killed at the end."""
    started: list[CollectorProcess] = []

    def start(
        env: dict[str, str], data_dir: Path | None = None, port: int | None = None
    ) -> CollectorProcess:
        folder = data_dir or tmp_path / f"data-{len(started)}"
        if port is None:
            process = CollectorProcess(folder, env)
        else:
            process = CollectorOnPort(folder, env, port)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop(signal.SIGKILL)


def base_env(keys: Keys, **extra: str) -> dict[str, str]:
    return {
        "COLLECTOR_KEYS_FILE": str(keys.path),
        "COLLECTOR_IP_RATE_LIMIT": "100000000/minute",
        "COLLECTOR_KEY_RATE_LIMIT": "100000000/minute",
        "COLLECTOR_SINK_CONFIRM_TIMEOUT": "1",
        # A crash in native code then writes every thread's Python stack to the log.
        "PYTHONFAULTHANDLER": "1",
        **extra,
    }


def readyz_statuses(collector: CollectorProcess, seconds: float) -> list[int]:
    """Poll /readyz for ``seconds`` and return every status seen."""
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen.append(httpx.get(collector.url + "/readyz", timeout=2, trust_env=False).status_code)
        time.sleep(0.05)
    return seen


def assert_no_server_error(load: Load, collector: CollectorProcess) -> None:
    errors = {
        status: count
        for status, count in load.statuses().items()
        if status >= 500 and status != 503
    }
    assert not errors, f"server errors by status: {errors}"
    log = collector.log()
    assert "unexpected error" not in log, log[-3000:]
    assert "Exception in ASGI application" not in log, log[-3000:]


def assert_alive(collector: CollectorProcess) -> None:
    assert collector.process is not None
    assert collector.process.poll() is None, f"the collector exited:\n{collector.log()[-3000:]}"


def assert_delivered(
    acknowledged: set[str], sink: SinkCopies, data_dir: Path, database: Path
) -> None:
    """Check the delivery invariant for ``acknowledged`` against the sink and staging."""
    assert acknowledged, "no event was acknowledged, so the case checked no delivery"
    staging = build_staging(data_dir, database)
    report = compare(acknowledged, sink, staging)
    missing = report.missing_in_sink
    assert not missing, f"{len(missing)} acknowledged events are not in the sink: {missing[:3]}"
    absent = report.missing_in_staging
    assert not absent, f"{len(absent)} acknowledged events are not in staging: {absent[:3]}"
    repeated = report.repeated_in_staging
    assert not repeated, f"{len(repeated)} events repeat in staging: {list(repeated.items())[:3]}"


def assert_local_delivered(load: Load, data_dir: Path, tmp_path: Path) -> None:
    sink = read_local_sink(data_dir)
    assert_delivered(load.acknowledged(), sink, data_dir, tmp_path / "warehouse.duckdb")


# Pub/Sub sink

# Fault mode of the Pub/Sub test server and its parameters. A delay of 1.5 s is longer than
# the 1 s confirm timeout, so every request waits for a publish that does not confirm in time.
PUBSUB_FAULTS: dict[str, dict[str, float]] = {
    "unavailable": {},
    "slow": {"delay_seconds": 1.5},
    "internal": {},
    "frozen": {},
}


@pytest.mark.parametrize("mode", list(PUBSUB_FAULTS))
def test_pubsub_fault_then_recovery(
    mode: str, pubsub_server: PubSubTestServer, keys: Keys, launch: Launch, tmp_path: Path
) -> None:
    pubsub_server.create_topic(TOPIC)
    env = base_env(
        keys,
        COLLECTOR_SINK="pubsub",
        COLLECTOR_PUBSUB_TOPIC=TOPIC,
        COLLECTOR_PUBSUB_PUBLISH_TIMEOUT="3",
        PUBSUB_EMULATOR_HOST=pubsub_server.host_port,
    )
    collector = launch(env)
    wait_for_status(collector.url + "/readyz", 200, 5)
    load = Load(collector.url, keys.server).start()
    try:
        time.sleep(1.5)
        pubsub_server.set_fault(mode, **PUBSUB_FAULTS[mode])
        fault_start = time.monotonic()
        readyz_during_fault = readyz_statuses(collector, 3.0)
        fault_end = time.monotonic()
        pubsub_server.clear_fault()
        wait_for_status(collector.url + "/readyz", 200, 6)
        recovered = time.monotonic()
        time.sleep(2.0)
    finally:
        load.stop()

    assert_no_server_error(load, collector)
    assert set(load.statuses()) <= {200, 503}, load.statuses()
    refused = [outcome for outcome in load.outcomes if outcome.status == 503]
    assert refused, f"no request got 503 while Pub/Sub was {mode}"
    assert {outcome.retry_after for outcome in refused} == {"2"}
    assert 503 in readyz_during_fault
    during = load.started_between(fault_start + 0.1, fault_end)
    assert during, "no request was sent during the fault"
    confirmed = [outcome for outcome in during if outcome.status == 200]
    assert not confirmed, f"{len(confirmed)} requests got 200 while Pub/Sub was {mode}"
    after = load.started_between(recovered + 1.0, time.monotonic())
    assert after, "no request was sent after recovery"
    assert {outcome.status for outcome in after} == {200}
    assert scrape(collector.url)["collector_inflight_events"] == 0
    assert_alive(collector)

    sink = write_pubsub_rows(pubsub_server.published(TOPIC), tmp_path / "pubsub-rows")
    assert_delivered(
        load.acknowledged(), sink, tmp_path / "pubsub-rows", tmp_path / "warehouse.duckdb"
    )


# Redis for the rate limits


def storage_up(collector: CollectorProcess) -> float:
    return scrape(collector.url)["collector_rate_limit_storage_up"]


def wait_for_storage_up(collector: CollectorProcess, expected: float, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if storage_up(collector) == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"collector_rate_limit_storage_up did not become {expected} in time")


def test_redis_down_frozen_and_back(
    redis: RedisServer, keys: Keys, launch: Launch, tmp_path: Path
) -> None:
    collector = launch(base_env(keys, COLLECTOR_RATE_LIMIT_STORAGE=redis.url))
    load = Load(collector.url, keys.server).start()
    assert redis.process is not None
    try:
        time.sleep(1.0)
        redis.stop()
        wait_for_storage_up(collector, 0, 3)
        time.sleep(1.0)
        redis.start()
        wait_for_storage_up(collector, 1, 4)
        # A stopped process accepts connections but never replies, so the Redis client's
        # 0.5 s socket timeout ends each attempt.
        redis.process.send_signal(signal.SIGSTOP)
        wait_for_storage_up(collector, 0, 3)
        time.sleep(1.0)
        redis.process.send_signal(signal.SIGCONT)
        wait_for_storage_up(collector, 1, 4)
        time.sleep(1.0)
    finally:
        if redis.process is not None:
            redis.process.send_signal(signal.SIGCONT)
        load.stop()

    assert_no_server_error(load, collector)
    # The limiter fails open, so every request is stored while Redis is away.
    assert set(load.statuses()) == {200}, load.statuses()
    slowest = max(outcome.seconds for outcome in load.outcomes)
    assert slowest < 2.0, f"a request took {slowest:.2f} s while Redis was away"
    log = collector.log()
    assert log.count("rate-limit storage failed") == 2
    assert log.count("rate-limit storage is back") == 2
    assert_alive(collector)
    assert_local_delivered(load, collector.data_dir, tmp_path)


# Local sink on a tmpfs


def test_local_disk_full_then_freed(
    tmpfs: Tmpfs, keys: Keys, launch: Launch, tmp_path: Path
) -> None:
    collector = launch(base_env(keys), data_dir=tmpfs.folder)
    load = Load(collector.url, keys.server).start()
    recovery_error = None
    try:
        time.sleep(1.0)
        tmpfs.fill()
        full_at = time.monotonic()
        readyz_while_full = []
        while time.monotonic() < full_at + 2.5:
            # Take back the space that the collector frees by truncating a failed write.
            tmpfs.fill()
            response = httpx.get(collector.url + "/readyz", timeout=2, trust_env=False)
            readyz_while_full.append(response.status_code)
            time.sleep(0.05)
        full_end = time.monotonic()
        tmpfs.free()
        freed_at = time.monotonic()
        try:
            wait_for_status(collector.url + "/readyz", 200, 5)
        except AssertionError as exc:
            recovery_error = str(exc)
        time.sleep(1.5)
    finally:
        load.stop()

    assert_no_server_error(load, collector)
    assert set(load.statuses()) <= {200, 503}, load.statuses()
    while_full = load.started_between(full_at + 0.2, full_end)
    assert 503 in {outcome.status for outcome in while_full}
    assert 503 in readyz_while_full
    assert_alive(collector)
    assert_local_delivered(load, tmpfs.folder, tmp_path)

    assert recovery_error is None, f"no recovery after space was freed: {recovery_error}"
    late = load.started_between(freed_at + 1.0, time.monotonic())
    assert late, "no request was sent after space was freed"
    assert {outcome.status for outcome in late} == {200}


def test_local_read_only_then_writable(
    tmpfs: Tmpfs, keys: Keys, launch: Launch, tmp_path: Path
) -> None:
    """Start on a data folder remounted read-only, then remount it read-write.

    Linux refuses ``mount -o remount,ro`` with "mount point is busy" while a process has a
    file open for writing there, and a running collector always has its current file open.
    So the first collector stops (SIGTERM closes the file) before the remount, and a second
    one starts on the read-only folder.
    """
    env = base_env(keys)
    first = launch(env, data_dir=tmpfs.folder)
    first_load = Load(first.url, keys.server).start()
    time.sleep(1.0)
    first_load.stop()
    assert first.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    tmpfs.remount_or_fail("ro")

    second = launch(env, data_dir=tmpfs.folder)
    assert httpx.get(second.url + "/healthz", trust_env=False).status_code == 200
    read_only_load = Load(second.url, keys.server).start()
    try:
        readyz_read_only = readyz_statuses(second, 1.5)
    finally:
        read_only_load.stop()
    tmpfs.remount_or_fail("rw")
    writable_at = time.monotonic()
    recovery_error = None
    try:
        wait_for_status(second.url + "/readyz", 200, 5)
    except AssertionError as exc:
        recovery_error = str(exc)
    late_load = Load(second.url, keys.server).start()
    time.sleep(1.5)
    late_load.stop()

    for load in (first_load, read_only_load, late_load):
        assert_no_server_error(load, second)
    assert set(read_only_load.statuses()) == {503}, read_only_load.statuses()
    # The sink reports ready again one second after each failed write so that it can retry,
    # so readiness alternates while the disk stays read-only.
    assert 503 in readyz_read_only
    assert_alive(second)
    acknowledged = first_load.acknowledged() | late_load.acknowledged()
    sink = read_local_sink(tmpfs.folder)
    assert_delivered(acknowledged, sink, tmpfs.folder, tmp_path / "warehouse.duckdb")

    assert recovery_error is None, f"no recovery after the remount read-write: {recovery_error}"
    late = late_load.started_between(writable_at, time.monotonic())
    assert {outcome.status for outcome in late} == {200}, late_load.statuses()


# Signals


def test_sigterm_under_load(keys: Keys, launch: Launch, tmp_path: Path) -> None:
    collector = launch(base_env(keys))
    load = Load(collector.url, keys.server, retries=0).start()
    assert collector.process is not None
    try:
        time.sleep(1.5)
        signalled = time.monotonic()
        collector.process.send_signal(signal.SIGTERM)
        code = collector.process.wait(10)
        exit_seconds = time.monotonic() - signalled
    finally:
        load.stop()

    assert exit_seconds < 8, f"the collector took {exit_seconds:.1f} s to exit"
    # uvicorn re-raises SIGTERM after a graceful shutdown, so the status may be -15.
    assert code in (0, -signal.SIGTERM)
    assert "collector stopped" in collector.log()
    assert_no_server_error(load, collector)
    assert set(load.statuses()) <= {200, 503, 0}, load.statuses()
    assert_local_delivered(load, collector.data_dir, tmp_path)


def test_sigkill_then_restart_same_data(keys: Keys, launch: Launch, tmp_path: Path) -> None:
    env = base_env(keys)
    first = launch(env)
    assert first.process is not None
    load = Load(first.url, keys.server, retries=10, pause_after_failure=0.1).start()
    try:
        time.sleep(1.5)
        first.process.kill()
        first.process.wait(5)
        second = launch(env, data_dir=first.data_dir, port=first.port)
        restarted_at = time.monotonic()
        time.sleep(2.0)
    finally:
        load.stop()

    assert_no_server_error(load, second)
    assert set(load.statuses()) <= {200, 503, 0}, load.statuses()
    after = load.started_between(restarted_at + 0.2, time.monotonic())
    assert after, "no request was sent after the restart"
    assert {outcome.status for outcome in after} == {200}
    assert_alive(second)
    assert_local_delivered(load, first.data_dir, tmp_path)


# Misbehaving clients


def test_client_disconnects_mid_body(keys: Keys, launch: Launch, tmp_path: Path) -> None:
    collector = launch(base_env(keys))
    assert collector.process is not None
    pid = collector.process.pid
    fds_before = open_fds(pid)
    tasks_before = scrape(collector.url)["collector_asyncio_tasks"]
    load = Load(collector.url, keys.server).start()
    try:
        for number in range(100):
            body = orjson.dumps([make_event() for _ in range(5)])
            sock = connect(collector.port)
            sock.sendall(request_head(collector.port, "/collect", len(body), keys.server))
            sock.sendall(body[: len(body) // 2])
            if number % 2:
                # Linger 0 makes close() send RST instead of FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            time.sleep(0.01)
            sock.close()
        time.sleep(0.5)
    finally:
        load.stop()

    assert_no_server_error(load, collector)
    assert set(load.statuses()) == {200}, load.statuses()
    assert wait_for_status(collector.url + "/healthz", 200, 2) < 2
    metrics = scrape(collector.url)
    disconnects = metrics.get('collector_requests_total{path="/collect",status="499"}', 0)
    assert 0 < disconnects <= 100
    fds_settled = _wait_for_at_most(lambda: open_fds(pid), fds_before + 2, 3)
    assert fds_settled <= fds_before + 2, f"open fds went from {fds_before} to {fds_settled}"
    tasks_settled = _wait_for_at_most(
        lambda: scrape(collector.url)["collector_asyncio_tasks"], tasks_before + 1, 3
    )
    assert tasks_settled <= tasks_before + 1, f"tasks went {tasks_before} -> {tasks_settled}"
    assert_alive(collector)
    assert_local_delivered(load, collector.data_dir, tmp_path)


def _wait_for_at_most(read: Callable[[], float], limit: float, timeout: float) -> float:
    """Poll ``read`` until it returns at most ``limit`` or ``timeout`` passes, and return it."""
    end = time.monotonic() + timeout
    value = read()
    while value > limit and time.monotonic() < end:
        time.sleep(0.1)
        value = read()
    return value


def _slow_body_client(port: int, key: str, trickle: bool, results: list[Any]) -> None:
    """Send a body too slowly (one byte per 0.2 s, or nothing after the first bytes)."""
    body = orjson.dumps([make_event()])
    started = time.monotonic()
    response = b""
    with connect(port, timeout=6) as sock:
        sock.sendall(request_head(port, "/collect", len(body), key) + body[:10])
        sock.settimeout(0.2)
        for byte in body[10:]:
            if time.monotonic() - started > 5:
                break
            try:
                response = sock.recv(4096)
            except TimeoutError:
                if trickle:
                    sock.sendall(bytes([byte]))
                continue
            break
        sock.settimeout(2)
        response += read_response(sock)
        closed = sock.recv(1) == b"" if response else False
    results.append((status_of(response), time.monotonic() - started, response, closed))


def test_slow_bodies_get_408(keys: Keys, launch: Launch, tmp_path: Path) -> None:
    collector = launch(base_env(keys, COLLECTOR_BODY_READ_TIMEOUT="1"))
    load = Load(collector.url, keys.server).start()
    results: list[Any] = []
    clients = [
        threading.Thread(
            target=_slow_body_client, args=(collector.port, keys.server, n % 2 == 0, results)
        )
        for n in range(30)
    ]
    try:
        time.sleep(0.5)
        slow_start = time.monotonic()
        for client in clients:
            client.start()
        for client in clients:
            client.join(10)
        slow_end = time.monotonic()
        time.sleep(0.5)
    finally:
        load.stop()

    assert len(results) == 30
    for status, seconds, response, closed in results:
        assert status == 408, response[:300]
        assert 0.9 <= seconds < 2.5, f"the 408 came after {seconds:.2f} s"
        assert b"connection: close" in response.lower()
        assert closed, "the server kept the connection open after 408"
    meanwhile = load.started_between(slow_start, slow_end)
    assert meanwhile, "no other request was sent while the slow bodies were open"
    assert {outcome.status for outcome in meanwhile} == {200}
    slowest = max(outcome.seconds for outcome in meanwhile)
    # Below the 1 s body timeout: no normal request waited behind a slow body.
    assert slowest < 0.9, f"a normal request took {slowest:.2f} s next to the slow bodies"
    assert_no_server_error(load, collector)
    assert_alive(collector)
    assert_local_delivered(load, collector.data_dir, tmp_path)


def test_many_idle_connections(keys: Keys, launch: Launch, tmp_path: Path) -> None:
    collector = launch(base_env(keys))
    assert collector.process is not None
    pid = collector.process.pid
    fds_before = open_fds(pid)
    idle: list[socket.socket] = []
    try:
        idle = [connect(collector.port) for _ in range(500)]
        # A few descriptors of the baseline (the start-up health check) may close meanwhile.
        fds_idle = _wait_for_at_least(lambda: open_fds(pid), fds_before + 495, 3)
        load = Load(collector.url, keys.server).start()
        try:
            time.sleep(2.0)
            started = time.monotonic()
            healthz = httpx.get(collector.url + "/healthz", timeout=2, trust_env=False)
            healthz_seconds = time.monotonic() - started
        finally:
            load.stop()
    finally:
        for sock in idle:
            sock.close()

    assert fds_idle >= fds_before + 495, f"the server holds {fds_idle} fds, {fds_before} before"
    assert healthz.status_code == 200
    assert healthz_seconds < 1.0
    assert set(load.statuses()) == {200}, load.statuses()
    slowest = max(outcome.seconds for outcome in load.outcomes)
    assert slowest < 1.0, f"a request took {slowest:.2f} s next to 500 idle connections"
    fds_settled = _wait_for_at_most(lambda: open_fds(pid), fds_before + 5, 3)
    assert fds_settled <= fds_before + 5, f"open fds went from {fds_before} to {fds_settled}"
    assert_no_server_error(load, collector)
    assert_alive(collector)
    assert_local_delivered(load, collector.data_dir, tmp_path)


def _wait_for_at_least(read: Callable[[], float], limit: float, timeout: float) -> float:
    end = time.monotonic() + timeout
    value = read()
    while value < limit and time.monotonic() < end:
        time.sleep(0.1)
        value = read()
    return value


def test_connection_limit_gives_503(keys: Keys, launch: Launch, tmp_path: Path) -> None:
    collector = launch(base_env(keys, COLLECTOR_MAX_CONNECTIONS="20"))
    headers = {"Content-Type": "application/json", "X-API-Key": keys.server}
    idle: list[socket.socket] = []
    try:
        idle = [connect(collector.port) for _ in range(30)]
        time.sleep(0.3)
        over_limit = Load(collector.url, keys.server, retries=0, pause_after_failure=0.02)
        over_limit.start()
        time.sleep(1.0)
        over_limit.stop()
    finally:
        for sock in idle:
            sock.close()
    wait_for_status(collector.url + "/healthz", 200, 3)
    under_limit = Load(collector.url, keys.server).start()
    time.sleep(1.0)
    under_limit.stop()
    event = make_event()
    response = httpx.post(
        collector.url + "/collect", content=orjson.dumps([event]), headers=headers
    )

    assert set(over_limit.statuses()) == {503}, over_limit.statuses()
    assert set(under_limit.statuses()) == {200}, under_limit.statuses()
    assert response.status_code == 200
    for load in (over_limit, under_limit):
        assert_no_server_error(load, collector)
    assert_alive(collector)
    sink = read_local_sink(collector.data_dir)
    acknowledged = under_limit.acknowledged() | {event["event_id"]}
    assert_delivered(acknowledged, sink, collector.data_dir, tmp_path / "warehouse.duckdb")
