"""Tests of the Pub/Sub sink with the real google-cloud-pubsub client over real gRPC.

The Pub/Sub test server runs on threads of the pytest process. Tests of the whole service
start real ``collector serve`` processes pointed at it through PUBSUB_EMULATOR_HOST. The
other tests drive PubSubSink directly on an event loop of the test.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from collector.enrich import ROW_COLUMNS
from collector.models import SCHEMA_VERSION
from collector.settings import Settings
from collector.sinks import pubsub as pubsub_module
from collector.sinks.base import Message, SinkOverloaded, SinkUnavailable
from collector.sinks.pubsub import PubSubSink
from tests.collector_load import Load, Outcome, rss_bytes
from tests.conftest import EXAMPLES, CollectorProcess, Keys, make_event
from tests.pubsub_server import PubSubTestServer
from tests.pubsub_server.fixtures import pubsub_server_fixture

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "projects/test-project/topics/events"
INVALID_TOPIC = "projects/test-project/topics/rejected-events"
# Columns that a BigQuery subscription with write_metadata fills in. The row has the others.
METADATA_COLUMNS = {"subscription_name", "message_id", "publish_time", "attributes"}

pubsub_server = pubsub_server_fixture()


@pytest.fixture
def emulator(pubsub_server: PubSubTestServer, monkeypatch: pytest.MonkeyPatch) -> PubSubTestServer:
    """The test server with TOPIC created, and PUBSUB_EMULATOR_HOST pointing at it."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_server.host_port)
    for name in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    pubsub_server.create_topic(TOPIC)
    return pubsub_server


def sink_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"sink": "pubsub", "pubsub_topic": TOPIC, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def rows(count: int, event_name: str = "page_turned", start: int = 0) -> list[Message]:
    return [
        Message(orjson.dumps({"event_id": f"e-{start + index}"}), event_name)
        for index in range(count)
    ]


def published_ids(server: PubSubTestServer, topic: str = TOPIC) -> list[str]:
    return [orjson.loads(message.data)["event_id"] for message in server.published(topic)]


def collector_env(server: PubSubTestServer, keys: Keys, **extra: str) -> dict[str, str]:
    return {
        "COLLECTOR_SINK": "pubsub",
        "COLLECTOR_PUBSUB_TOPIC": TOPIC,
        "COLLECTOR_KEYS_FILE": str(keys.path),
        "COLLECTOR_IP_RATE_LIMIT": "1000000/minute",
        "COLLECTOR_KEY_RATE_LIMIT": "1000000/minute",
        "PUBSUB_EMULATOR_HOST": server.host_port,
        **extra,
    }


def post(collector: CollectorProcess, key: str, events: list[dict[str, Any]]) -> httpx.Response:
    headers = {"Content-Type": "application/json", "X-API-Key": key}
    return httpx.post(
        collector.url + "/collect", content=orjson.dumps(events), headers=headers, timeout=10
    )


def get_status(collector: CollectorProcess, path: str) -> int:
    return httpx.get(collector.url + path, timeout=2).status_code


def wait_for_status(collector: CollectorProcess, path: str, expected: int, timeout: float) -> float:
    """Poll ``path`` until it returns ``expected`` and return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if get_status(collector, path) == expected:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{path} did not return {expected} within {timeout} s")


def acknowledged_ids(outcomes: list[Outcome]) -> set[str]:
    return {
        event_id for outcome in outcomes if outcome.status == 200 for event_id in outcome.event_ids
    }


# Collector processes


def test_outage_loses_no_acknowledged_event(
    emulator: PubSubTestServer, keys: Keys, start_collector: Any
) -> None:
    collector = start_collector(collector_env(emulator, keys, COLLECTOR_SINK_CONFIRM_TIMEOUT="1"))
    pid = collector.process.pid
    assert wait_for_status(collector, "/readyz", 200, 5) < 5
    load = Load(collector.url, keys.server, threads=6, max_requests_per_thread=700).start()
    rss_samples = [rss_bytes(pid)]
    readyz_seen: list[tuple[str, int]] = []

    def hold(phase: str, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rss_samples.append(rss_bytes(pid))
            readyz_seen.append((phase, get_status(collector, "/readyz")))
            time.sleep(0.1)

    hold("before", 1.0)
    emulator.set_fault("unavailable")
    outage_start = time.monotonic()
    # Requests already waiting hold their thread for up to the 1 s confirm timeout, so the
    # outage lasts long enough for new requests to start and end inside it.
    hold("unavailable", 2.5)
    outage_end = time.monotonic()
    emulator.set_fault("slow", delay_seconds=0.3)
    hold("slow", 1.5)
    emulator.clear_fault()
    recovered_at = time.monotonic()
    hold("after", 2.0)
    outcomes = load.stop()

    statuses = {outcome.status for outcome in outcomes}
    assert statuses <= {200, 503}, f"unexpected statuses {statuses}"
    refused = [outcome for outcome in outcomes if outcome.status == 503]
    assert refused, "no request got 503 during the outage"
    assert all(outcome.retry_after == "2" for outcome in refused)
    during = [o for o in outcomes if o.started >= outage_start and o.finished <= outage_end]
    assert during, "no request ran during the outage"
    # Pub/Sub confirmed nothing in that window, so none of these requests may get 200.
    assert all(outcome.status == 503 for outcome in during)
    assert ("unavailable", 503) in readyz_seen
    assert readyz_seen[-1] == ("after", 200)
    late = [outcome for outcome in outcomes if outcome.started > recovered_at + 1.0]
    assert late, "no request was sent after recovery"
    assert all(outcome.status == 200 for outcome in late)

    acknowledged = acknowledged_ids(outcomes)
    assert len(acknowledged) > 1000
    missing = acknowledged - set(published_ids(emulator))
    assert not missing, f"{len(missing)} acknowledged events were not published"

    growth = max(rss_samples) - rss_samples[0]
    assert growth < 50 * 1024 * 1024, f"RSS grew by {growth / 2**20:.0f} MiB under load"
    assert collector.process.poll() is None


def test_sigterm_publishes_acknowledged_events(
    emulator: PubSubTestServer, keys: Keys, start_collector: Any
) -> None:
    collector = start_collector(collector_env(emulator, keys))
    assert wait_for_status(collector, "/readyz", 200, 5) < 5
    load = Load(
        collector.url,
        keys.server,
        threads=6,
        max_requests_per_thread=2000,
        stop_on_transport_error=True,
    ).start()
    time.sleep(1.0)
    # Slow confirmations keep requests waiting on the sink when the signal arrives.
    emulator.set_fault("slow", delay_seconds=0.4)
    time.sleep(0.2)
    signalled = time.monotonic()
    collector.process.send_signal(signal.SIGTERM)
    returncode = collector.process.wait(10)
    exit_seconds = time.monotonic() - signalled
    outcomes = load.wait(10)

    assert exit_seconds < 8, f"the collector took {exit_seconds:.1f} s to exit"
    # uvicorn re-raises SIGTERM after a clean shutdown, so the exit status may be -15.
    assert returncode in (0, -signal.SIGTERM), collector.log()[-3000:]
    assert "Application shutdown complete." in collector.log()
    after_signal = [o for o in outcomes if o.status == 200 and o.finished > signalled]
    assert after_signal, "no request in flight at SIGTERM was confirmed"
    acknowledged = acknowledged_ids(outcomes)
    missing = acknowledged - set(published_ids(emulator))
    assert not missing, f"{len(missing)} acknowledged events were not published"
    assert "Pub/Sub sink closed" in collector.log()


def test_frozen_pubsub_gives_503_in_time(
    emulator: PubSubTestServer, keys: Keys, start_collector: Any
) -> None:
    collector = start_collector(collector_env(emulator, keys, COLLECTOR_SINK_CONFIRM_TIMEOUT="1"))
    assert wait_for_status(collector, "/readyz", 200, 5) < 5
    assert post(collector, keys.server, [make_event()]).status_code == 200

    emulator.set_fault("frozen")
    started = time.monotonic()
    frozen = post(collector, keys.server, [make_event()])
    elapsed = time.monotonic() - started
    assert frozen.status_code == 503
    assert frozen.headers["retry-after"] == "2"
    assert elapsed < 2.5, f"the request took {elapsed:.1f} s with a 1 s confirm timeout"
    assert wait_for_status(collector, "/readyz", 503, 3) < 3
    assert get_status(collector, "/healthz") == 200
    started = time.monotonic()
    refused = post(collector, keys.server, [make_event()])
    assert refused.status_code == 503
    assert time.monotonic() - started < 1.0

    emulator.clear_fault()
    assert wait_for_status(collector, "/readyz", 200, 4) < 4
    event = make_event()
    assert post(collector, keys.server, [event]).status_code == 200
    assert event["event_id"] in published_ids(emulator)


def test_readyz_waits_for_topic(
    pubsub_server: PubSubTestServer, keys: Keys, start_collector: Any
) -> None:
    started = time.monotonic()
    collector = start_collector(collector_env(pubsub_server, keys))
    assert time.monotonic() - started < 10
    assert get_status(collector, "/readyz") == 503
    refused = post(collector, keys.server, [make_event()])
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "2"

    pubsub_server.create_topic(TOPIC)
    assert wait_for_status(collector, "/readyz", 200, 4) < 4
    event = make_event()
    assert post(collector, keys.server, [event]).status_code == 200
    assert published_ids(pubsub_server) == [event["event_id"]]


def test_message_is_raw_row(emulator: PubSubTestServer, keys: Keys, start_collector: Any) -> None:
    collector = start_collector(collector_env(emulator, keys))
    events = [make_event(name) for name in EXAMPLES]
    response = post(collector, keys.server, events)
    assert response.status_code == 200
    assert response.json() == {"accepted": len(events), "rejected": []}

    schema = json.loads((ROOT / "schemas" / "book_media_events.json").read_text())
    columns = [column["name"] for column in schema]
    assert set(columns) >= METADATA_COLUMNS
    row_columns = [name for name in columns if name not in METADATA_COLUMNS]
    assert tuple(row_columns) == ROW_COLUMNS

    messages = emulator.published(TOPIC)
    assert len(messages) == len(events)
    by_id = {event["event_id"]: event for event in events}
    for message in messages:
        row = orjson.loads(message.data)
        assert sorted(row) == sorted(row_columns)
        assert orjson.dumps(row) == message.data
        event = by_id[row["event_id"]]
        assert row["event_name"] == event["event_name"]
        assert message.attributes == {
            "event_name": event["event_name"],
            "schema_version": SCHEMA_VERSION,
        }


def test_rejected_event_reaches_dead_letter_topic(
    emulator: PubSubTestServer, keys: Keys, start_collector: Any
) -> None:
    emulator.create_topic(INVALID_TOPIC)
    collector = start_collector(
        collector_env(emulator, keys, COLLECTOR_PUBSUB_INVALID_TOPIC=INVALID_TOPIC)
    )
    valid = make_event("page_turned")
    invalid = make_event("page_turned")
    invalid["properties"]["page_number"] = "thirteen"
    response = post(collector, keys.server, [valid, invalid])
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert [item["index"] for item in response.json()["rejected"]] == [1]

    deadline = time.monotonic() + 5
    while not emulator.published(INVALID_TOPIC) and time.monotonic() < deadline:
        time.sleep(0.05)
    records = [orjson.loads(message.data) for message in emulator.published(INVALID_TOPIC)]
    assert len(records) == 1
    record = records[0]
    assert record["event_id"] == invalid["event_id"]
    assert record["index"] == 1
    assert record["key_id"] == "backend"
    assert record["errors"]
    assert orjson.loads(record["payload"]) == invalid
    assert record["payload_truncated"] is False
    assert published_ids(emulator) == [valid["event_id"]]


# PubSubSink on an event loop of the test


def test_publish_invalid_reaches_topic(emulator: PubSubTestServer) -> None:
    emulator.create_topic(INVALID_TOPIC)
    records = [orjson.dumps({"index": index, "errors": ["bad"]}) for index in range(3)]

    async def scenario() -> None:
        sink = PubSubSink(sink_settings(pubsub_invalid_topic=INVALID_TOPIC))
        await sink.start()
        sink.publish_invalid(records)
        sink.publish_invalid([])
        deadline = time.monotonic() + 5
        while len(emulator.published(INVALID_TOPIC)) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await sink.close()
        assert sink.counters["invalid_published"] == 3
        assert sink.counters["invalid_dropped"] == 0

    run(scenario)
    assert [message.data for message in emulator.published(INVALID_TOPIC)] == records
    assert emulator.published(TOPIC) == []


def test_publish_invalid_drops_when_full(emulator: PubSubTestServer) -> None:
    emulator.create_topic(INVALID_TOPIC)
    emulator.set_fault("frozen", methods=["Publish"])
    record = b'{"errors":["bad"]}'
    total = pubsub_module.INVALID_QUEUE_MAX_RECORDS + 2000

    async def scenario() -> None:
        sink = PubSubSink(sink_settings(pubsub_invalid_topic=INVALID_TOPIC))
        await sink.start()
        await asyncio.sleep(0)
        sink.publish_invalid([record] * 100)
        # Let the worker take a first batch, which then waits in the frozen Publish call.
        await asyncio.sleep(0.1)
        sink.publish_invalid([record] * (total - 100))
        sink.publish_invalid([b"x" * (pubsub_module.INVALID_RECORD_MAX_BYTES + 1)])
        dropped = sink.counters["invalid_dropped"]
        assert dropped == total - 100 - pubsub_module.INVALID_QUEUE_MAX_RECORDS + 1
        emulator.clear_fault()
        await sink.close()
        assert sink.counters["invalid_published"] > 0

    run(scenario)


def test_publish_invalid_without_topic_is_noop(emulator: PubSubTestServer) -> None:
    async def scenario() -> None:
        sink = PubSubSink(sink_settings())
        await sink.start()
        sink.publish_invalid([b'{"errors":[]}'])
        await sink.close()
        assert sink.counters["invalid_dropped"] == 0

    run(scenario)
    assert emulator.rpc_count("Publish") == 0


def test_batches_split_by_message_count(emulator: PubSubTestServer) -> None:
    async def scenario() -> None:
        sink = PubSubSink(sink_settings(pubsub_batch_max_messages=500))
        await sink.start()
        await sink.publish(rows(1200))
        await sink.close()

    run(scenario)
    assert emulator.rpc_count("Publish") == 3
    # Batches are published concurrently, so the server may receive them in any order.
    ids = published_ids(emulator)
    assert len(ids) == 1200
    assert set(ids) == {f"e-{index}" for index in range(1200)}


def test_batches_split_by_bytes(emulator: PubSubTestServer) -> None:
    payload = b"x" * 10_000
    messages = [
        Message(orjson.dumps({"event_id": f"e-{index}", "pad": payload.decode()}), "page_turned")
        for index in range(20)
    ]

    async def scenario() -> None:
        sink = PubSubSink(sink_settings(pubsub_batch_max_bytes=50_000))
        await sink.start()
        await sink.publish(messages)
        await sink.close()

    run(scenario)
    # Four messages of about 10 kB fit in 50,000 bytes, five do not.
    assert emulator.rpc_count("Publish") == 5
    assert len(emulator.published(TOPIC)) == 20


def test_concurrent_calls_share_batch(emulator: PubSubTestServer) -> None:
    async def scenario() -> None:
        sink = PubSubSink(sink_settings(pubsub_batch_max_latency=0.05))
        await sink.start()
        await asyncio.gather(*(sink.publish(rows(10, start=call * 10)) for call in range(40)))
        await sink.close()

    run(scenario)
    assert emulator.rpc_count("Publish") == 1
    assert sorted(published_ids(emulator)) == sorted(f"e-{index}" for index in range(400))


def test_overload_raises_at_once(emulator: PubSubTestServer) -> None:
    emulator.set_fault("frozen", methods=["Publish"])

    async def scenario() -> None:
        sink = PubSubSink(sink_settings(), max_inflight_messages=100)
        await sink.start()
        first = asyncio.create_task(sink.publish(rows(80)))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(SinkOverloaded):
            await sink.publish(rows(30, start=80))
        assert time.monotonic() - started < 0.1
        assert sink.counters["overloaded_calls"] == 1
        emulator.clear_fault()
        await first
        await sink.publish(rows(30, start=80))
        await sink.close()

    run(scenario)
    assert sorted(published_ids(emulator)) == sorted(f"e-{index}" for index in range(110))


def test_transient_errors_are_retried(emulator: PubSubTestServer) -> None:
    emulator.set_fault("partial", failure_fraction=0.6, seed=3)

    async def scenario() -> None:
        sink = PubSubSink(sink_settings(pubsub_batch_max_messages=50))
        await sink.start()
        await asyncio.gather(*(sink.publish(rows(25, start=call * 25)) for call in range(20)))
        assert sink.counters["retries"] > 0
        await sink.close()

    run(scenario)
    assert emulator.injected_failures > 0
    assert sorted(published_ids(emulator)) == sorted(f"e-{index}" for index in range(500))


@pytest.mark.parametrize("fault", ["deadline", "internal"])
def test_retry_codes_recover(emulator: PubSubTestServer, fault: str) -> None:
    emulator.set_fault(fault, methods=["Publish"])

    async def scenario() -> None:
        sink = PubSubSink(sink_settings())
        await sink.start()
        task = asyncio.create_task(sink.publish(rows(5)))
        await asyncio.sleep(0.3)
        assert not task.done()
        assert not sink.ready
        emulator.clear_fault()
        await task
        assert sink.ready
        await sink.close()

    run(scenario)
    assert published_ids(emulator) == [f"e-{index}" for index in range(5)]


def test_missing_topic_fails_fast(emulator: PubSubTestServer) -> None:
    async def scenario() -> None:
        sink = PubSubSink(sink_settings())
        await sink.start()
        assert sink.ready
        emulator.reset()
        started = time.monotonic()
        with pytest.raises(SinkUnavailable, match="NOT_FOUND"):
            await sink.publish(rows(3))
        assert time.monotonic() - started < 1.0
        assert not sink.ready
        await sink.close()

    run(scenario)


def test_caller_timeout_still_publishes(emulator: PubSubTestServer) -> None:
    emulator.set_fault("frozen", methods=["Publish"])

    async def scenario() -> None:
        sink = PubSubSink(sink_settings(sink_confirm_timeout=5))
        await sink.start()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sink.publish(rows(4)), 0.3)
        emulator.clear_fault()
        deadline = time.monotonic() + 5
        while sink.counters["published_messages"] < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert sink.counters["published_messages"] == 4
        assert sink.counters["failed_messages"] == 0
        await sink.close()

    run(scenario)
    assert published_ids(emulator) == [f"e-{index}" for index in range(4)]


def test_start_probes_until_topic_exists(
    pubsub_server: PubSubTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_server.host_port)

    async def scenario() -> None:
        sink = PubSubSink(sink_settings())
        started = time.monotonic()
        await sink.start()
        assert time.monotonic() - started < 1.0
        assert not sink.ready
        pubsub_server.create_topic(TOPIC)
        deadline = time.monotonic() + 3
        while not sink.ready and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sink.ready
        await sink.publish(rows(2))
        await sink.close()

    run(scenario)
    assert published_ids(pubsub_server) == ["e-0", "e-1"]


def test_start_gives_up_when_unreachable(emulator: PubSubTestServer) -> None:
    emulator.set_fault("unavailable")

    async def scenario() -> None:
        sink = PubSubSink(sink_settings())
        started = time.monotonic()
        await sink.start()
        elapsed = time.monotonic() - started
        assert elapsed > pubsub_module.START_CHECK_SECONDS - 0.5
        assert elapsed < pubsub_module.START_CHECK_SECONDS + 1.0
        assert not sink.ready
        emulator.clear_fault()
        deadline = time.monotonic() + 3
        while not sink.ready and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sink.ready
        await sink.close()

    run(scenario)


def test_close_flushes_pending_batches(emulator: PubSubTestServer) -> None:
    async def scenario() -> None:
        sink = PubSubSink(sink_settings(pubsub_batch_max_latency=1.0))
        await sink.start()
        calls = [asyncio.create_task(sink.publish(rows(3, start=call * 3))) for call in range(5)]
        await asyncio.sleep(0.05)
        assert not any(call.done() for call in calls)
        started = time.monotonic()
        await sink.close()
        assert time.monotonic() - started < 0.5
        await asyncio.gather(*calls)
        with pytest.raises(SinkUnavailable):
            await sink.publish(rows(1))

    run(scenario)
    assert sorted(published_ids(emulator)) == sorted(f"e-{index}" for index in range(15))


def test_close_gives_up_on_frozen_pubsub(emulator: PubSubTestServer) -> None:
    emulator.set_fault("frozen", methods=["Publish"])

    async def scenario() -> None:
        sink = PubSubSink(sink_settings())
        await sink.start()
        call = asyncio.create_task(sink.publish(rows(3)))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await sink.close()
        elapsed = time.monotonic() - started
        assert elapsed < pubsub_module.DRAIN_SECONDS + 1.0
        with pytest.raises(SinkUnavailable):
            await call

    run(scenario)
    emulator.clear_fault()
