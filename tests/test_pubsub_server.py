"""Tests of the Pub/Sub test server through the real google-cloud-pubsub clients."""

from __future__ import annotations

import json
import random
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from google import pubsub_v1 as gapic
from google.api_core import exceptions
from google.api_core import retry as retries
from google.cloud import pubsub_v1

from tests.pubsub_server import PubSubTestServer
from tests.pubsub_server.control import ControlClient
from tests.pubsub_server.fixtures import pubsub_server_fixture
from tests.pubsub_server.server import (
    MAX_ATTRIBUTE_KEY_BYTES,
    MAX_ATTRIBUTE_VALUE_BYTES,
    MAX_ATTRIBUTES_PER_MESSAGE,
    MAX_MESSAGES_PER_PUBLISH,
    MAX_PUBLISH_REQUEST_BYTES,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT = "projects/test-project"
TOPIC = f"{PROJECT}/topics/events"
SUBSCRIPTION = f"{PROJECT}/subscriptions/events-sub"

pubsub_server = pubsub_server_fixture()
pubsub_server_with_control = pubsub_server_fixture(name="pubsub_server_with_control", control=True)
pubsub_server_one_worker = pubsub_server_fixture(name="pubsub_server_one_worker", max_workers=1)


def short_retry(deadline: float = 1.5) -> retries.Retry:
    """Return the client's default Publish retry policy with a short deadline."""
    return retries.Retry(
        initial=0.05,
        maximum=0.2,
        multiplier=2,
        deadline=deadline,
        predicate=retries.if_exception_type(
            exceptions.Aborted,
            exceptions.Cancelled,
            exceptions.DeadlineExceeded,
            exceptions.InternalServerError,
            exceptions.ResourceExhausted,
            exceptions.ServiceUnavailable,
            exceptions.Unknown,
        ),
    )


def point_clients_at(server: PubSubTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host_port)
    # gRPC and urllib would send loopback traffic through a configured proxy.
    for name in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def emulator(pubsub_server, monkeypatch):
    point_clients_at(pubsub_server, monkeypatch)
    return pubsub_server


@pytest.fixture
def publisher(emulator):
    """High-level PublisherClient with a 1.5 s retry deadline and 0.5 s call timeout."""
    client = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_latency=0.01),
        publisher_options=pubsub_v1.types.PublisherOptions(retry=short_retry(), timeout=0.5),
    )
    yield client
    client.stop()
    client.transport.close()


@pytest.fixture
def gapic_publisher(emulator):
    """Low-level PublisherClient, which sends each publish call as one request."""
    client = gapic.PublisherClient()
    yield client
    client.transport.close()


@pytest.fixture
def subscriber(emulator):
    client = pubsub_v1.SubscriberClient()
    yield client
    client.close()


@pytest.fixture
def topic(emulator):
    emulator.create_topic(TOPIC)
    return TOPIC


def publish_raw(client: gapic.PublisherClient, messages: list[dict], topic: str = TOPIC):
    return client.publish(topic=topic, messages=messages, retry=None, timeout=5)


# Publishing and pulling


def test_publish_and_pull_round_trip(publisher, subscriber, emulator):
    publisher.create_topic(name=TOPIC)
    subscriber.create_subscription(name=SUBSCRIPTION, topic=TOPIC)

    futures = [
        publisher.publish(TOPIC, f"event-{i}".encode(), source="web", seq=str(i)) for i in range(3)
    ]
    message_ids = [future.result(timeout=5) for future in futures]

    assert len(set(message_ids)) == 3
    assert emulator.published(TOPIC) == [
        (message_ids[i], f"event-{i}".encode(), {"source": "web", "seq": str(i)}) for i in range(3)
    ]
    response = subscriber.pull(subscription=SUBSCRIPTION, max_messages=10, timeout=5)
    received = [item.message for item in response.received_messages]
    assert [m.message_id for m in received] == message_ids
    assert [m.data for m in received] == [b"event-0", b"event-1", b"event-2"]
    assert dict(received[0].attributes) == {"source": "web", "seq": "0"}
    assert received[0].publish_time.timestamp() == pytest.approx(time.time(), abs=60)

    subscriber.acknowledge(
        subscription=SUBSCRIPTION, ack_ids=[item.ack_id for item in response.received_messages]
    )
    # The server returns an empty Pull response 0.1 s before the client's deadline.
    empty = subscriber.pull(subscription=SUBSCRIPTION, max_messages=10, timeout=0.5, retry=None)
    assert list(empty.received_messages) == []


def test_publish_fans_out_to_subscriptions(publisher, subscriber, topic):
    other = f"{PROJECT}/subscriptions/other-sub"
    subscriber.create_subscription(name=SUBSCRIPTION, topic=topic)
    subscriber.create_subscription(name=other, topic=topic)

    message_id = publisher.publish(topic, b"payload").result(timeout=5)

    for name in (SUBSCRIPTION, other):
        response = subscriber.pull(subscription=name, max_messages=10, timeout=5)
        assert [item.message.message_id for item in response.received_messages] == [message_id]


def test_subscription_misses_earlier_messages(publisher, subscriber, topic):
    publisher.publish(topic, b"before").result(timeout=5)
    subscriber.create_subscription(name=SUBSCRIPTION, topic=topic)
    publisher.publish(topic, b"after").result(timeout=5)

    response = subscriber.pull(subscription=SUBSCRIPTION, max_messages=10, timeout=5)

    assert [item.message.data for item in response.received_messages] == [b"after"]


def test_nacked_message_is_redelivered(publisher, subscriber, topic):
    subscriber.create_subscription(name=SUBSCRIPTION, topic=topic)
    message_id = publisher.publish(topic, b"retry me").result(timeout=5)
    first = subscriber.pull(subscription=SUBSCRIPTION, max_messages=1, timeout=5)

    subscriber.modify_ack_deadline(
        subscription=SUBSCRIPTION,
        ack_ids=[first.received_messages[0].ack_id],
        ack_deadline_seconds=0,
    )
    second = subscriber.pull(subscription=SUBSCRIPTION, max_messages=1, timeout=5)

    assert second.received_messages[0].message.message_id == message_id
    assert second.received_messages[0].ack_id != first.received_messages[0].ack_id


def test_pull_waits_for_a_message(publisher, subscriber, topic):
    subscriber.create_subscription(name=SUBSCRIPTION, topic=topic)
    timer = threading.Timer(0.2, lambda: publisher.publish(topic, b"late"))
    timer.start()
    try:
        response = subscriber.pull(subscription=SUBSCRIPTION, max_messages=5, timeout=5)
    finally:
        timer.join()

    assert [item.message.data for item in response.received_messages] == [b"late"]


def test_low_level_async_client_publishes(emulator, topic):
    import asyncio

    from google.pubsub_v1.services.publisher import PublisherAsyncClient

    async def publish_batch() -> list[str]:
        client = PublisherAsyncClient()
        messages = [gapic.PubsubMessage(data=b"%d" % i) for i in range(500)]
        response = await client.publish(topic=topic, messages=messages, timeout=5)
        await client.transport.close()
        return list(response.message_ids)

    message_ids = asyncio.run(publish_batch())

    assert len(set(message_ids)) == 500
    assert [m.message_id for m in emulator.published(topic)] == message_ids


# Resource management and errors


def test_topic_lifecycle(publisher, subscriber, emulator):
    created = publisher.create_topic(name=TOPIC)
    subscriber.create_subscription(name=SUBSCRIPTION, topic=TOPIC)

    assert created.name == TOPIC
    assert publisher.get_topic(topic=TOPIC).name == TOPIC
    assert subscriber.get_subscription(subscription=SUBSCRIPTION).ack_deadline_seconds == 10
    with pytest.raises(exceptions.AlreadyExists):
        publisher.create_topic(name=TOPIC)
    with pytest.raises(exceptions.AlreadyExists):
        subscriber.create_subscription(name=SUBSCRIPTION, topic=TOPIC)

    publisher.delete_topic(topic=TOPIC)

    with pytest.raises(exceptions.NotFound):
        publisher.get_topic(topic=TOPIC, retry=None)
    with pytest.raises(exceptions.NotFound):
        publisher.delete_topic(topic=TOPIC)
    assert subscriber.get_subscription(subscription=SUBSCRIPTION).topic == "_deleted-topic_"
    subscriber.delete_subscription(subscription=SUBSCRIPTION)
    with pytest.raises(exceptions.NotFound):
        subscriber.get_subscription(subscription=SUBSCRIPTION, retry=None)


def test_publish_to_missing_topic_is_not_found(gapic_publisher, publisher):
    with pytest.raises(exceptions.NotFound):
        publish_raw(gapic_publisher, [{"data": b"x"}])

    future = publisher.publish(TOPIC, b"x")
    with pytest.raises(exceptions.NotFound):
        future.result(timeout=5)


@pytest.mark.parametrize(
    "name",
    [
        "events",
        "projects/test-project/topics/ev",
        "projects/test-project/topics/1events",
        "projects/test-project/topics/goog-events",
        "projects/test-project/topics/bad/name",
        "projects/test-project/topics/" + "e" * 256,
    ],
)
def test_invalid_topic_name_is_rejected(publisher, name):
    with pytest.raises(exceptions.InvalidArgument):
        publisher.create_topic(name=name)
    with pytest.raises(exceptions.InvalidArgument):
        publisher.get_topic(topic=name, retry=None)


def test_list_topics_pages(gapic_publisher, emulator):
    names = [f"{PROJECT}/topics/topic-{i}" for i in range(5)]
    for name in names:
        emulator.create_topic(name)
    emulator.create_topic("projects/other-project/topics/elsewhere")

    first = gapic_publisher.list_topics(request={"project": PROJECT, "page_size": 2}).pages
    listed = [topic.name for page in first for topic in page.topics]

    assert listed == names


def test_test_iam_permissions_on_topic(gapic_publisher, topic):
    request = {"resource": topic, "permissions": ["pubsub.topics.publish"]}

    response = gapic_publisher.test_iam_permissions(request=request)

    assert list(response.permissions) == ["pubsub.topics.publish"]
    missing = gapic_publisher.test_iam_permissions(
        request={"resource": f"{PROJECT}/topics/missing", "permissions": ["x"]}
    )
    assert list(missing.permissions) == []


# Publish validation


def big_attributes(count: int) -> dict[str, str]:
    return {f"key-{i}": "v" for i in range(count)}


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([], id="no-messages"),
        pytest.param([{"data": b""}], id="empty-message"),
        pytest.param([{"data": b"x"}] * (MAX_MESSAGES_PER_PUBLISH + 1), id="1001-messages"),
        pytest.param([{"data": b"x" * MAX_PUBLISH_REQUEST_BYTES}], id="request-over-10MB"),
        pytest.param(
            [{"attributes": big_attributes(MAX_ATTRIBUTES_PER_MESSAGE + 1)}],
            id="101-attributes",
        ),
        pytest.param(
            [{"attributes": {"k" * (MAX_ATTRIBUTE_KEY_BYTES + 1): "v"}}], id="long-attribute-key"
        ),
        pytest.param(
            [{"attributes": {"k": "é" * (MAX_ATTRIBUTE_VALUE_BYTES // 2 + 1)}}],
            id="long-attribute-value-utf8",
        ),
        pytest.param(
            [{"data": b"a", "ordering_key": "a"}, {"data": b"b", "ordering_key": "b"}],
            id="mixed-ordering-keys",
        ),
    ],
)
def test_invalid_publish_is_rejected(gapic_publisher, emulator, topic, messages):
    with pytest.raises(exceptions.InvalidArgument):
        publish_raw(gapic_publisher, messages)

    assert emulator.published(topic) == []


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([{"data": b"x"}] * MAX_MESSAGES_PER_PUBLISH, id="1000-messages"),
        pytest.param([{"data": b"x" * (MAX_PUBLISH_REQUEST_BYTES - 100)}], id="request-near-10MB"),
        pytest.param(
            [{"attributes": big_attributes(MAX_ATTRIBUTES_PER_MESSAGE)}], id="100-attributes"
        ),
        pytest.param(
            [
                {
                    "attributes": {
                        "k" * MAX_ATTRIBUTE_KEY_BYTES: "v" * MAX_ATTRIBUTE_VALUE_BYTES,
                    }
                }
            ],
            id="max-attribute-sizes",
        ),
        pytest.param([{"attributes": {"only": "attribute"}}], id="attributes-without-data"),
    ],
)
def test_publish_at_limits_is_accepted(gapic_publisher, emulator, topic, messages):
    response = publish_raw(gapic_publisher, messages)

    assert len(response.message_ids) == len(messages)
    assert len(emulator.published(topic)) == len(messages)


# Fault injection


def test_unavailable_fails_publish_after_retries(publisher, emulator, topic):
    emulator.set_fault("unavailable")

    future = publisher.publish(topic, b"lost")
    with pytest.raises(exceptions.RetryError) as raised:
        future.result(timeout=10)

    assert isinstance(raised.value.cause, exceptions.ServiceUnavailable)
    assert emulator.rpc_count("Publish") > 1
    assert emulator.published(topic) == []
    with pytest.raises(exceptions.ServiceUnavailable):
        publisher.get_topic(topic=topic, retry=None)

    emulator.clear_fault()
    assert publisher.publish(topic, b"delivered").result(timeout=5)


def test_fault_spares_untargeted_methods(publisher, emulator, topic):
    emulator.set_fault("unavailable", methods=["Publish"])

    assert publisher.get_topic(topic=topic, retry=None).name == topic
    with pytest.raises(exceptions.RetryError):
        publisher.publish(topic, b"x").result(timeout=10)


def test_slow_delays_then_succeeds(publisher, emulator, topic):
    emulator.set_fault("slow", delay_seconds=0.3)

    started = time.monotonic()
    assert publisher.get_topic(topic=topic, retry=None, timeout=5).name == topic
    assert time.monotonic() - started >= 0.3
    with pytest.raises(exceptions.DeadlineExceeded):
        publisher.get_topic(topic=topic, retry=None, timeout=0.1)
    assert publisher.publish(topic, b"slow").result(timeout=5)


def test_deadline_returns_deadline_exceeded(publisher, emulator, topic):
    emulator.set_fault("deadline")

    with pytest.raises(exceptions.DeadlineExceeded):
        publisher.get_topic(topic=topic, retry=None, timeout=5)
    with pytest.raises(exceptions.RetryError) as raised:
        publisher.publish(topic, b"x").result(timeout=10)
    assert isinstance(raised.value.cause, exceptions.DeadlineExceeded)


def test_internal_returns_internal_error(publisher, emulator, topic):
    emulator.set_fault("internal")

    with pytest.raises(exceptions.InternalServerError):
        publisher.get_topic(topic=topic, retry=None)
    with pytest.raises(exceptions.RetryError) as raised:
        publisher.publish(topic, b"x").result(timeout=10)
    assert isinstance(raised.value.cause, exceptions.InternalServerError)


def test_partial_fails_seeded_fraction(gapic_publisher, emulator, topic):
    calls = 40
    expected_rng = random.Random(7)
    expected = [expected_rng.random() < 0.25 for _ in range(calls)]

    for _attempt in range(2):
        emulator.set_fault("partial", failure_fraction=0.25, seed=7)
        failures = []
        for i in range(calls):
            try:
                publish_raw(gapic_publisher, [{"data": b"%d" % i}])
                failures.append(False)
            except exceptions.ServiceUnavailable:
                failures.append(True)
        assert failures == expected
        assert emulator.injected_failures == sum(expected)

    assert 0 < sum(expected) < calls
    # Partial mode targets only Publish.
    assert gapic_publisher.get_topic(topic=topic, retry=None).name == topic


def test_partial_is_absorbed_by_client_retries(publisher, emulator, topic):
    emulator.set_fault("partial", failure_fraction=0.5, seed=3)

    futures = [publisher.publish(topic, b"%d" % i) for i in range(20)]
    message_ids = [future.result(timeout=10) for future in futures]

    assert len(set(message_ids)) == 20
    assert emulator.injected_failures > 0
    assert sorted(m.data for m in emulator.published(topic)) == sorted(b"%d" % i for i in range(20))


def test_frozen_call_times_out(publisher, emulator, topic):
    emulator.set_fault("frozen")

    started = time.monotonic()
    with pytest.raises(exceptions.DeadlineExceeded):
        publisher.get_topic(topic=topic, retry=None, timeout=0.3)
    assert time.monotonic() - started < 2.0


def test_frozen_call_resumes_after_mode_change(publisher, emulator, topic):
    emulator.set_fault("frozen")
    results = []
    caller = threading.Thread(
        target=lambda: results.append(publisher.get_topic(topic=topic, retry=None, timeout=10))
    )
    caller.start()
    time.sleep(0.3)
    assert caller.is_alive()

    emulator.clear_fault()
    caller.join(timeout=5)

    assert not caller.is_alive()
    assert results[0].name == topic


def test_timed_out_frozen_call_frees_worker(pubsub_server_one_worker, monkeypatch):
    server = pubsub_server_one_worker
    point_clients_at(server, monkeypatch)
    client = gapic.PublisherClient()
    server.create_topic(TOPIC)
    server.set_fault("frozen")

    with pytest.raises(exceptions.DeadlineExceeded):
        client.get_topic(topic=TOPIC, retry=None, timeout=0.3)
    time.sleep(0.2)
    # ListTopics is not a fault target, so it needs only the one worker thread.
    topics = client.list_topics(request={"project": PROJECT}, retry=None, timeout=2)
    names = [topic.name for topic in topics]
    client.transport.close()

    assert names == [TOPIC]


def test_frozen_call_does_not_block_stop(monkeypatch):
    server = PubSubTestServer().start()
    point_clients_at(server, monkeypatch)
    client = gapic.PublisherClient()
    errors = []

    def call_frozen() -> None:
        try:
            client.get_topic(topic=TOPIC, retry=None, timeout=30)
        except exceptions.GoogleAPICallError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call_frozen)
    try:
        server.create_topic(TOPIC)
        server.set_fault("frozen")
        caller.start()
        time.sleep(0.3)
        assert caller.is_alive()
    finally:
        started = time.monotonic()
        server.stop(grace=0.2)
        stop_seconds = time.monotonic() - started
    caller.join(timeout=5)
    client.transport.close()

    assert stop_seconds < 2.0
    assert not caller.is_alive()
    assert isinstance(errors[0], exceptions.ServiceUnavailable)


def test_fault_applies_to_test_iam_permissions(gapic_publisher, emulator, topic):
    emulator.set_fault("unavailable")

    with pytest.raises(exceptions.ServiceUnavailable):
        gapic_publisher.test_iam_permissions(
            request={"resource": topic, "permissions": ["pubsub.topics.publish"]}, retry=None
        )


@pytest.mark.parametrize(
    "mode, params",
    [
        ("broken", {}),
        ("slow", {"delay_seconds": -1}),
        ("slow", {"delay_seconds": float("inf")}),
        ("unavailable", {"methods": "Publish"}),
        ("partial", {"failure_fraction": 1.5}),
    ],
)
def test_invalid_fault_settings_raise(pubsub_server, mode, params):
    with pytest.raises(ValueError):
        pubsub_server.set_fault(mode, **params)

    assert pubsub_server.fault.mode.value == "ok"


# HTTP control endpoint and the command-line entry point


def test_control_endpoint_sets_fault(pubsub_server_with_control, monkeypatch):
    server = pubsub_server_with_control
    point_clients_at(server, monkeypatch)
    control = ControlClient(f"127.0.0.1:{server.control_port}")

    settings = control.set_fault("slow", delay_seconds=0.2)

    assert settings["mode"] == "slow"
    assert settings["delay_seconds"] == 0.2
    assert server.fault.mode.value == "slow"
    with pytest.raises(RuntimeError, match="HTTP 400"):
        control.set_fault("sideways")
    with pytest.raises(RuntimeError, match="HTTP 400"):
        control.set_fault("ok", colour="blue")
    assert control.reset()["mode"] == "ok"


def read_json_line(process: subprocess.Popen, timeout: float) -> dict:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"the server printed no line within {timeout} s")
    return json.loads(process.stdout.readline())


def test_command_line_server(monkeypatch):
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.pubsub_server", "--port", "0", "--control-port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ports = read_json_line(process, timeout=15)
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", ports["host_port"])
        for name in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            monkeypatch.delenv(name, raising=False)
        publisher = pubsub_v1.PublisherClient(
            publisher_options=pubsub_v1.types.PublisherOptions(retry=short_retry(), timeout=1.0)
        )
        control = ControlClient(f"127.0.0.1:{ports['control_port']}")

        publisher.create_topic(name=TOPIC)
        message_id = publisher.publish(TOPIC, b"from a test", kind="cli").result(timeout=5)

        assert control.published(TOPIC) == [(message_id, b"from a test", {"kind": "cli"})]
        control.set_fault("unavailable")
        with pytest.raises(exceptions.ServiceUnavailable):
            publisher.get_topic(topic=TOPIC, retry=None)
        publisher.transport.close()
    finally:
        process.terminate()
        try:
            return_code = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        stderr = process.stderr.read()
        process.stdout.close()
        process.stderr.close()

    assert return_code == 0, stderr
