"""In-memory Pub/Sub gRPC server for tests, with fault injection.

The real google-cloud-pubsub clients reach it through
``PUBSUB_EMULATOR_HOST=host:port`` over plain (insecure) gRPC. Requests and
responses use the protobuf classes shipped in google-cloud-pubsub 2.44
(``google.pubsub_v1.types``), registered as generic gRPC handlers because the
package ships client stubs but no servicer base classes.

Implemented:

- Publisher: CreateTopic, GetTopic, DeleteTopic, ListTopics,
  ListTopicSubscriptions, Publish.
- Subscriber: CreateSubscription, GetSubscription, DeleteSubscription,
  ListSubscriptions, Pull, Acknowledge, ModifyAckDeadline.
- IAMPolicy: TestIamPermissions, which grants every requested permission on
  an existing topic or subscription.
- Publish validation. A missing topic is NOT_FOUND. These are
  INVALID_ARGUMENT: a malformed topic name, 0 or more than 1000 messages,
  a request over 10,000,000 bytes, a message without data and attributes,
  more than 100 attributes, an attribute key over 256 bytes or a value over
  1024 bytes (UTF-8), and more than one ordering key in a request.
- Publish assigns server-unique message ids and publish_time, and delivers
  each message to every subscription attached to the topic at publish time.
- Pull redelivers a message whose ack deadline has passed.

Sources: the field documentation in google/pubsub_v1/types/pubsub.py
(message, name and ack deadline rules, 100 attributes, 10 MB) and
_SERVER_PUBLISH_MAX_BYTES = 10 * 1000 * 1000 in
google/cloud/pubsub_v1/publisher/_batch/thread.py. The cap of 1000 messages
per request and the attribute key and value sizes are the resource limits of
https://cloud.google.com/pubsub/quotas as other projects' code restates them.
NOTE: these three numbers were not checked against that page itself.

Not implemented, although documented for the real service:

- StreamingPull, so ``SubscriberClient.subscribe`` does not work. Use Pull.
- UpdateTopic, UpdateSubscription, DetachSubscription, snapshots, Seek,
  schemas, ModifyPushConfig, SetIamPolicy and GetIamPolicy. They return
  UNIMPLEMENTED.
- Push, BigQuery and Cloud Storage delivery, subscription filters, dead
  letter topics, retry policies, exactly-once delivery, message retention
  and expiration. A subscription with a filter or a push endpoint is
  rejected with UNIMPLEMENTED. Other subscription settings are stored and
  returned but not acted on.
- Ordering guarantees: each subscription delivers in publish order, and
  enable_message_ordering changes nothing.
- The real service's error details. Status codes follow it, and the
  details here are this server's own wording.
- Quotas, throughput limits, authentication and IAM policy checks.
- Project id format checks: any project segment without "/" is accepted.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import NamedTuple

import grpc
from google.iam.v1 import iam_policy_pb2
from google.protobuf import empty_pb2, timestamp_pb2
from google.pubsub_v1.types import pubsub

from tests.pubsub_server.faults import FaultInjector, FaultMode, FaultSettings

logger = logging.getLogger(__name__)

MAX_MESSAGES_PER_PUBLISH = 1000
MAX_PUBLISH_REQUEST_BYTES = 10_000_000
MAX_ATTRIBUTES_PER_MESSAGE = 100
MAX_ATTRIBUTE_KEY_BYTES = 256
MAX_ATTRIBUTE_VALUE_BYTES = 1024
DEFAULT_ACK_DEADLINE_SECONDS = 10
MIN_ACK_DEADLINE_SECONDS = 10
MAX_ACK_DEADLINE_SECONDS = 600
# The real service documents no cap for one Pull response, so this cap is
# this server's own.
MAX_PULL_MESSAGES = 1000
# Maximum time a Pull without return_immediately waits for a first message.
# The real service waits "for a bounded amount of time" without a number.
MAX_PULL_WAIT_SECONDS = 1.0
DEFAULT_PAGE_SIZE = 100
DELETED_TOPIC = "_deleted-topic_"

# gRPC's default limit of 4 MiB would reject a legal 10 MB Publish before the
# handler receives it. Requests above this bound get gRPC's RESOURCE_EXHAUSTED.
_SERVER_MAX_RECEIVE_BYTES = 2 * MAX_PUBLISH_REQUEST_BYTES

# A resource id starts with a letter and is 3 to 255 characters long, as the
# Topic.name and Subscription.name field documentation states.
_RESOURCE_ID = r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}"
_PROJECT_NAME = re.compile(r"projects/(?P<project>[^/]+)")
_TOPIC_NAME = re.compile(rf"projects/(?P<project>[^/]+)/topics/(?P<id>{_RESOURCE_ID})")
_SUBSCRIPTION_NAME = re.compile(
    rf"projects/(?P<project>[^/]+)/subscriptions/(?P<id>{_RESOURCE_ID})"
)

# Raw protobuf classes behind the proto-plus wrappers.
_Topic = pubsub.Topic.pb()
_PubsubMessage = pubsub.PubsubMessage.pb()
_GetTopicRequest = pubsub.GetTopicRequest.pb()
_DeleteTopicRequest = pubsub.DeleteTopicRequest.pb()
_ListTopicsRequest = pubsub.ListTopicsRequest.pb()
_ListTopicsResponse = pubsub.ListTopicsResponse.pb()
_ListTopicSubscriptionsRequest = pubsub.ListTopicSubscriptionsRequest.pb()
_ListTopicSubscriptionsResponse = pubsub.ListTopicSubscriptionsResponse.pb()
_PublishRequest = pubsub.PublishRequest.pb()
_PublishResponse = pubsub.PublishResponse.pb()
_Subscription = pubsub.Subscription.pb()
_GetSubscriptionRequest = pubsub.GetSubscriptionRequest.pb()
_DeleteSubscriptionRequest = pubsub.DeleteSubscriptionRequest.pb()
_ListSubscriptionsRequest = pubsub.ListSubscriptionsRequest.pb()
_ListSubscriptionsResponse = pubsub.ListSubscriptionsResponse.pb()
_PullRequest = pubsub.PullRequest.pb()
_PullResponse = pubsub.PullResponse.pb()
_AcknowledgeRequest = pubsub.AcknowledgeRequest.pb()
_ModifyAckDeadlineRequest = pubsub.ModifyAckDeadlineRequest.pb()
_Empty = empty_pb2.Empty


class PublishedMessage(NamedTuple):
    """A message as stored by a successful Publish call."""

    message_id: str
    data: bytes
    attributes: dict[str, str]


@dataclasses.dataclass
class _Delivery:
    message: object  # a raw PubsubMessage
    ack_deadline: float = 0.0  # time.monotonic() value


@dataclasses.dataclass
class _SubscriptionState:
    resource: object  # a raw Subscription
    pending: collections.deque = dataclasses.field(default_factory=collections.deque)
    outstanding: dict[str, _Delivery] = dataclasses.field(default_factory=dict)


class _Store:
    """Topics, subscriptions and published messages, guarded by one condition."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.topics: dict[str, object] = {}
        self.subscriptions: dict[str, _SubscriptionState] = {}
        self.published: dict[str, list[PublishedMessage]] = collections.defaultdict(list)
        self.message_ids = itertools.count(1)
        self.ack_ids = itertools.count(1)

    def clear(self) -> None:
        with self.condition:
            self.topics.clear()
            self.subscriptions.clear()
            self.published.clear()
            self.condition.notify_all()


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    logger.debug("returning %s: %s", code.name, details)
    context.abort(code, details)


def _check_name(
    context: grpc.ServicerContext, name: str, pattern: re.Pattern[str], kind: str
) -> None:
    match = pattern.fullmatch(name)
    if match is None or match["id"].startswith("goog"):
        _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Invalid {kind} name {name!r}: expected projects/{{project}}/{kind}s/{{id}}, where "
            "the id starts with a letter, is 3 to 255 characters of [A-Za-z0-9-_.~+%] "
            'and does not start with "goog".',
        )


def _check_project(context: grpc.ServicerContext, project: str) -> None:
    if _PROJECT_NAME.fullmatch(project) is None:
        _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Invalid project {project!r}: expected projects/{{project}}.",
        )


def _page(
    context: grpc.ServicerContext, names: list[str], page_size: int, page_token: str
) -> tuple[list[str], str]:
    """Return one page of `names` and the token of the next page ("" at the end)."""
    if page_size < 0:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"Invalid page_size {page_size}.")
    size = page_size or DEFAULT_PAGE_SIZE
    try:
        start = int(page_token) if page_token else 0
    except ValueError:
        start = -1
    if start < 0:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"Invalid page_token {page_token!r}.")
    end = start + size
    return names[start:end], (str(end) if end < len(names) else "")


def _validate_publish(context: grpc.ServicerContext, request) -> None:
    count = len(request.messages)
    if count == 0:
        _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            "Invalid Publish request: it contains no messages; send 1 to "
            f"{MAX_MESSAGES_PER_PUBLISH}.",
        )
    if count > MAX_MESSAGES_PER_PUBLISH:
        _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Invalid Publish request: it contains {count} messages, but the maximum is "
            f"{MAX_MESSAGES_PER_PUBLISH}.",
        )
    # ByteSize() of the parsed request equals the length of the bytes that a
    # standard protobuf serializer sent.
    size = request.ByteSize()
    if size > MAX_PUBLISH_REQUEST_BYTES:
        _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Invalid Publish request: its size is {size} bytes, but the maximum is "
            f"{MAX_PUBLISH_REQUEST_BYTES}.",
        )
    ordering_keys = {message.ordering_key for message in request.messages}
    if len(ordering_keys) > 1:
        _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            "Invalid Publish request: all messages in one request must have the same "
            f"ordering_key, but it contains {sorted(ordering_keys)!r}.",
        )
    for index, message in enumerate(request.messages):
        _validate_message(context, index, message)


def _validate_message(context: grpc.ServicerContext, index: int, message) -> None:
    if not message.data and not message.attributes:
        _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Invalid message at index {index}: it has no data and no attributes; set "
            "non-empty data or at least one attribute.",
        )
    if len(message.attributes) > MAX_ATTRIBUTES_PER_MESSAGE:
        _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Invalid message at index {index}: it has {len(message.attributes)} attributes, "
            f"but the maximum is {MAX_ATTRIBUTES_PER_MESSAGE}.",
        )
    for key, value in message.attributes.items():
        key_bytes = len(key.encode("utf-8"))
        if key_bytes > MAX_ATTRIBUTE_KEY_BYTES:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid message at index {index}: attribute key {key[:40]!r}... is "
                f"{key_bytes} bytes, but the maximum is {MAX_ATTRIBUTE_KEY_BYTES}.",
            )
        value_bytes = len(value.encode("utf-8"))
        if value_bytes > MAX_ATTRIBUTE_VALUE_BYTES:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid message at index {index}: the value of attribute {key!r} is "
                f"{value_bytes} bytes, but the maximum is {MAX_ATTRIBUTE_VALUE_BYTES}.",
            )


class _PublisherService:
    """Handlers of google.pubsub.v1.Publisher."""

    def __init__(self, store: _Store) -> None:
        self._store = store

    def create_topic(self, request, context):
        _check_name(context, request.name, _TOPIC_NAME, "topic")
        with self._store.condition:
            if request.name in self._store.topics:
                _abort(
                    context, grpc.StatusCode.ALREADY_EXISTS, f"Topic already exists: {request.name}"
                )
            topic = _Topic()
            topic.CopyFrom(request)
            self._store.topics[request.name] = topic
        logger.debug("created topic %s", request.name)
        return topic

    def get_topic(self, request, context):
        _check_name(context, request.topic, _TOPIC_NAME, "topic")
        with self._store.condition:
            topic = self._store.topics.get(request.topic)
            if topic is None:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"Topic not found: {request.topic}")
            return topic

    def delete_topic(self, request, context):
        _check_name(context, request.topic, _TOPIC_NAME, "topic")
        with self._store.condition:
            if self._store.topics.pop(request.topic, None) is None:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"Topic not found: {request.topic}")
            # Subscription.topic is documented to read "_deleted-topic_" once
            # its topic is deleted.
            for state in self._store.subscriptions.values():
                if state.resource.topic == request.topic:
                    state.resource.topic = DELETED_TOPIC
        logger.debug("deleted topic %s", request.topic)
        return _Empty()

    def list_topics(self, request, context):
        _check_project(context, request.project)
        prefix = request.project + "/topics/"
        with self._store.condition:
            names = sorted(name for name in self._store.topics if name.startswith(prefix))
            page, next_token = _page(context, names, request.page_size, request.page_token)
            topics = [self._store.topics[name] for name in page]
        return _ListTopicsResponse(topics=topics, next_page_token=next_token)

    def list_topic_subscriptions(self, request, context):
        _check_name(context, request.topic, _TOPIC_NAME, "topic")
        with self._store.condition:
            if request.topic not in self._store.topics:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"Topic not found: {request.topic}")
            names = sorted(
                name
                for name, state in self._store.subscriptions.items()
                if state.resource.topic == request.topic
            )
        page, next_token = _page(context, names, request.page_size, request.page_token)
        return _ListTopicSubscriptionsResponse(subscriptions=page, next_page_token=next_token)

    def publish(self, request, context):
        _check_name(context, request.topic, _TOPIC_NAME, "topic")
        _validate_publish(context, request)
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        store = self._store
        with store.condition:
            if request.topic not in store.topics:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"Topic not found: {request.topic}")
            subscriptions = [
                state
                for state in store.subscriptions.values()
                if state.resource.topic == request.topic
            ]
            history = store.published[request.topic]
            message_ids = []
            for incoming in request.messages:
                message_id = str(next(store.message_ids))
                history.append(
                    PublishedMessage(message_id, incoming.data, dict(incoming.attributes))
                )
                message_ids.append(message_id)
                if subscriptions:
                    message = _PubsubMessage()
                    message.CopyFrom(incoming)
                    message.message_id = message_id
                    message.publish_time.CopyFrom(now)
                    for state in subscriptions:
                        state.pending.append(_Delivery(message))
            if subscriptions:
                store.condition.notify_all()
        return _PublishResponse(message_ids=message_ids)


class _SubscriberService:
    """Handlers of google.pubsub.v1.Subscriber."""

    def __init__(self, store: _Store, stopping: threading.Event) -> None:
        self._store = store
        self._stopping = stopping

    def _subscription(self, context, name: str) -> _SubscriptionState:
        # Called with the store condition held.
        state = self._store.subscriptions.get(name)
        if state is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"Subscription not found: {name}")
        return state

    def create_subscription(self, request, context):
        _check_name(context, request.name, _SUBSCRIPTION_NAME, "subscription")
        _check_name(context, request.topic, _TOPIC_NAME, "topic")
        if request.filter:
            _abort(
                context,
                grpc.StatusCode.UNIMPLEMENTED,
                "Subscription filters are not supported by the test server.",
            )
        if request.push_config.push_endpoint:
            _abort(
                context,
                grpc.StatusCode.UNIMPLEMENTED,
                "Push subscriptions are not supported by the test server.",
            )
        deadline = request.ack_deadline_seconds or DEFAULT_ACK_DEADLINE_SECONDS
        if not MIN_ACK_DEADLINE_SECONDS <= deadline <= MAX_ACK_DEADLINE_SECONDS:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid ack_deadline_seconds {deadline}: expected 0 (default) or "
                f"{MIN_ACK_DEADLINE_SECONDS} to {MAX_ACK_DEADLINE_SECONDS}.",
            )
        with self._store.condition:
            if request.topic not in self._store.topics:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"Topic not found: {request.topic}")
            if request.name in self._store.subscriptions:
                _abort(
                    context,
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"Subscription already exists: {request.name}",
                )
            resource = _Subscription()
            resource.CopyFrom(request)
            resource.ack_deadline_seconds = deadline
            self._store.subscriptions[request.name] = _SubscriptionState(resource)
        logger.debug("created subscription %s on %s", request.name, request.topic)
        return resource

    def get_subscription(self, request, context):
        _check_name(context, request.subscription, _SUBSCRIPTION_NAME, "subscription")
        with self._store.condition:
            return self._subscription(context, request.subscription).resource

    def delete_subscription(self, request, context):
        _check_name(context, request.subscription, _SUBSCRIPTION_NAME, "subscription")
        with self._store.condition:
            self._subscription(context, request.subscription)
            del self._store.subscriptions[request.subscription]
            self._store.condition.notify_all()
        return _Empty()

    def list_subscriptions(self, request, context):
        _check_project(context, request.project)
        prefix = request.project + "/subscriptions/"
        with self._store.condition:
            names = sorted(name for name in self._store.subscriptions if name.startswith(prefix))
            page, next_token = _page(context, names, request.page_size, request.page_token)
            resources = [self._store.subscriptions[name].resource for name in page]
        return _ListSubscriptionsResponse(subscriptions=resources, next_page_token=next_token)

    def pull(self, request, context):
        _check_name(context, request.subscription, _SUBSCRIPTION_NAME, "subscription")
        if request.max_messages <= 0:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid max_messages {request.max_messages}: expected a positive integer.",
            )
        limit = min(request.max_messages, MAX_PULL_MESSAGES)
        wait_seconds = MAX_PULL_WAIT_SECONDS
        remaining = context.time_remaining()
        if remaining is not None:
            # Leave the client time to receive an empty response.
            wait_seconds = max(0.0, min(wait_seconds, remaining - 0.1))
        wait_until = time.monotonic() + wait_seconds
        store = self._store
        with store.condition:
            while True:
                state = self._subscription(context, request.subscription)
                received = self._take(state, limit)
                now = time.monotonic()
                if (
                    received
                    or request.return_immediately
                    or now >= wait_until
                    or self._stopping.is_set()
                    or not context.is_active()
                ):
                    return _PullResponse(received_messages=received)
                store.condition.wait(min(0.1, wait_until - now))

    def _take(self, state: _SubscriptionState, limit: int) -> list:
        # Called with the store condition held.
        now = time.monotonic()
        expired = [ack_id for ack_id, d in state.outstanding.items() if d.ack_deadline <= now]
        for ack_id in reversed(expired):
            state.pending.appendleft(state.outstanding.pop(ack_id))
        received = []
        deadline = now + state.resource.ack_deadline_seconds
        while state.pending and len(received) < limit:
            delivery = state.pending.popleft()
            delivery.ack_deadline = deadline
            ack_id = f"ack-{next(self._store.ack_ids)}"
            state.outstanding[ack_id] = delivery
            received.append(pubsub.ReceivedMessage.pb()(ack_id=ack_id, message=delivery.message))
        return received

    def acknowledge(self, request, context):
        _check_name(context, request.subscription, _SUBSCRIPTION_NAME, "subscription")
        if not request.ack_ids:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "Invalid request: ack_ids is empty.")
        with self._store.condition:
            state = self._subscription(context, request.subscription)
            # Unknown and expired ack ids are ignored.
            for ack_id in request.ack_ids:
                state.outstanding.pop(ack_id, None)
        return _Empty()

    def modify_ack_deadline(self, request, context):
        _check_name(context, request.subscription, _SUBSCRIPTION_NAME, "subscription")
        seconds = request.ack_deadline_seconds
        if not 0 <= seconds <= MAX_ACK_DEADLINE_SECONDS:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid ack_deadline_seconds {seconds}: expected 0 to "
                f"{MAX_ACK_DEADLINE_SECONDS}.",
            )
        with self._store.condition:
            state = self._subscription(context, request.subscription)
            deadline = time.monotonic() + seconds
            for ack_id in request.ack_ids:
                delivery = state.outstanding.get(ack_id)
                if delivery is not None:
                    delivery.ack_deadline = deadline
            self._store.condition.notify_all()
        return _Empty()


class _IamService:
    """Handlers of google.iam.v1.IAMPolicy."""

    def __init__(self, store: _Store) -> None:
        self._store = store

    def test_iam_permissions(self, request, context):
        with self._store.condition:
            exists = (
                request.resource in self._store.topics
                or request.resource in self._store.subscriptions
            )
        if not exists:
            # The IAM API returns an empty permission list for a missing resource.
            return iam_policy_pb2.TestIamPermissionsResponse(permissions=[])
        return iam_policy_pb2.TestIamPermissionsResponse(permissions=list(request.permissions))


# (service, RPC name, handler attribute, request class, response class)
_Route = tuple[str, str, str, type, type]
_ROUTES: list[_Route] = [
    ("google.pubsub.v1.Publisher", "CreateTopic", "create_topic", _Topic, _Topic),
    ("google.pubsub.v1.Publisher", "GetTopic", "get_topic", _GetTopicRequest, _Topic),
    ("google.pubsub.v1.Publisher", "DeleteTopic", "delete_topic", _DeleteTopicRequest, _Empty),
    (
        "google.pubsub.v1.Publisher",
        "ListTopics",
        "list_topics",
        _ListTopicsRequest,
        _ListTopicsResponse,
    ),
    (
        "google.pubsub.v1.Publisher",
        "ListTopicSubscriptions",
        "list_topic_subscriptions",
        _ListTopicSubscriptionsRequest,
        _ListTopicSubscriptionsResponse,
    ),
    ("google.pubsub.v1.Publisher", "Publish", "publish", _PublishRequest, _PublishResponse),
    (
        "google.pubsub.v1.Subscriber",
        "CreateSubscription",
        "create_subscription",
        _Subscription,
        _Subscription,
    ),
    (
        "google.pubsub.v1.Subscriber",
        "GetSubscription",
        "get_subscription",
        _GetSubscriptionRequest,
        _Subscription,
    ),
    (
        "google.pubsub.v1.Subscriber",
        "DeleteSubscription",
        "delete_subscription",
        _DeleteSubscriptionRequest,
        _Empty,
    ),
    (
        "google.pubsub.v1.Subscriber",
        "ListSubscriptions",
        "list_subscriptions",
        _ListSubscriptionsRequest,
        _ListSubscriptionsResponse,
    ),
    ("google.pubsub.v1.Subscriber", "Pull", "pull", _PullRequest, _PullResponse),
    ("google.pubsub.v1.Subscriber", "Acknowledge", "acknowledge", _AcknowledgeRequest, _Empty),
    (
        "google.pubsub.v1.Subscriber",
        "ModifyAckDeadline",
        "modify_ack_deadline",
        _ModifyAckDeadlineRequest,
        _Empty,
    ),
    (
        "google.iam.v1.IAMPolicy",
        "TestIamPermissions",
        "test_iam_permissions",
        iam_policy_pb2.TestIamPermissionsRequest,
        iam_policy_pb2.TestIamPermissionsResponse,
    ),
]


def _format_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class PubSubTestServer:
    """In-memory Pub/Sub gRPC server with fault injection.

    Start it with `start()` or a `with` block. Clients connect through
    ``PUBSUB_EMULATOR_HOST=<host_port>``. `control_port=0` also starts the
    HTTP control endpoint of `tests.pubsub_server.control` on a free port.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        control_port: int | None = None,
        max_workers: int = 32,
    ) -> None:
        # NOTE: each call held by `slow` or `frozen` occupies one of the
        # max_workers threads, and further calls queue behind them.
        self.host = host
        self._requested_port = port
        self._requested_control_port = control_port
        self._max_workers = max_workers
        self._stopping = threading.Event()
        self._store = _Store()
        self._faults = FaultInjector(self._stopping)
        self._counts_lock = threading.Lock()
        self._rpc_counts: collections.Counter[str] = collections.Counter()
        self._executor: futures.ThreadPoolExecutor | None = None
        self._grpc_server: grpc.Server | None = None
        self._control = None
        self.port: int | None = None

    # Lifecycle

    def start(self) -> PubSubTestServer:
        """Bind the ports and start serving. Returns self."""
        if self._grpc_server is not None:
            raise RuntimeError("The Pub/Sub test server is already started.")
        if self._stopping.is_set():
            raise RuntimeError("A stopped Pub/Sub test server cannot restart; create a new one.")
        self._executor = futures.ThreadPoolExecutor(
            max_workers=self._max_workers, thread_name_prefix="pubsub-test-server"
        )
        server = grpc.server(
            self._executor,
            options=[
                ("grpc.max_receive_message_length", _SERVER_MAX_RECEIVE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        server.add_generic_rpc_handlers(self._generic_handlers())
        address = _format_host_port(self.host, self._requested_port)
        port = server.add_insecure_port(address)
        if port == 0:
            raise RuntimeError(f"Failed to bind the Pub/Sub test server to {address}.")
        self.port = port
        server.start()
        self._grpc_server = server
        if self._requested_control_port is not None:
            from tests.pubsub_server.control import ControlServer

            self._control = ControlServer(self, self.host, self._requested_control_port)
            self._control.start()
        logger.info(
            "Pub/Sub test server listening on %s (control port %s)",
            self.host_port,
            self.control_port,
        )
        return self

    def stop(self, grace: float = 0.5) -> None:
        """Stop serving. Frozen, slow and waiting calls end with UNAVAILABLE.

        Usually returns within `grace` + 1 seconds, and at once when no call
        is running.
        """
        if self._grpc_server is None:
            return
        self._stopping.set()
        self._faults.wake_all()
        with self._store.condition:
            self._store.condition.notify_all()
        if self._control is not None:
            self._control.stop()
        stopped = self._grpc_server.stop(grace)
        if not stopped.wait(grace + 1.0):
            logger.warning("Pub/Sub test server did not stop within %.1f s", grace + 1.0)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._grpc_server = None
        logger.info("Pub/Sub test server on %s stopped", self.host_port)

    def __enter__(self) -> PubSubTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Addresses

    @property
    def host_port(self) -> str:
        """Address for PUBSUB_EMULATOR_HOST, such as "127.0.0.1:8085"."""
        if self.port is None:
            raise RuntimeError("The Pub/Sub test server is not started.")
        return _format_host_port(self.host, self.port)

    @property
    def control_port(self) -> int | None:
        """Port of the HTTP control endpoint, or None when it is not running."""
        return None if self._control is None else self._control.port

    # Inspection

    def published(self, topic: str) -> list[PublishedMessage]:
        """Return every message published to `topic`, oldest first.

        `topic` is a full name such as "projects/p/topics/t". The history
        survives DeleteTopic and is cleared only by `reset()`. An unknown
        topic returns an empty list.
        """
        with self._store.condition:
            return list(self._store.published.get(topic, ()))

    def topics(self) -> list[str]:
        """Return the names of all existing topics, sorted."""
        with self._store.condition:
            return sorted(self._store.topics)

    def create_topic(self, topic: str) -> None:
        """Create `topic` without a gRPC call. Raises ValueError if it exists."""
        if _TOPIC_NAME.fullmatch(topic) is None:
            raise ValueError(f"invalid topic name {topic!r}; expected projects/{{p}}/topics/{{t}}")
        with self._store.condition:
            if topic in self._store.topics:
                raise ValueError(f"topic already exists: {topic}")
            self._store.topics[topic] = _Topic(name=topic)

    def rpc_count(self, method: str) -> int:
        """Return how many calls of `method` (such as "Publish") were received."""
        with self._counts_lock:
            return self._rpc_counts[method]

    def reset(self) -> None:
        """Delete all topics, subscriptions, history and counts, and clear the fault."""
        self._store.clear()
        with self._counts_lock:
            self._rpc_counts.clear()
        self.clear_fault()

    # Fault control

    def set_fault(
        self,
        mode: FaultMode | str,
        *,
        delay_seconds: float = 1.0,
        failure_fraction: float = 0.5,
        seed: int = 0,
        methods: Iterable[str] | None = None,
    ) -> FaultSettings:
        """Switch the fault mode. See `FaultInjector.configure` for the arguments."""
        return self._faults.configure(
            mode,
            delay_seconds=delay_seconds,
            failure_fraction=failure_fraction,
            seed=seed,
            methods=methods,
        )

    def clear_fault(self) -> FaultSettings:
        """Return to mode `ok` and release frozen calls."""
        return self._faults.configure(FaultMode.OK)

    @property
    def fault(self) -> FaultSettings:
        """Current fault settings."""
        return self._faults.settings

    @property
    def injected_failures(self) -> int:
        """Number of calls failed by the current fault settings."""
        return self._faults.injected_failures

    # gRPC wiring

    def _generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        services = {
            "google.pubsub.v1.Publisher": _PublisherService(self._store),
            "google.pubsub.v1.Subscriber": _SubscriberService(self._store, self._stopping),
            "google.iam.v1.IAMPolicy": _IamService(self._store),
        }
        handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = collections.defaultdict(dict)
        for service, method, attribute, request_class, response_class in _ROUTES:
            function = getattr(services[service], attribute)
            handlers[service][method] = grpc.unary_unary_rpc_method_handler(
                self._wrap(method, function),
                request_deserializer=request_class.FromString,
                response_serializer=response_class.SerializeToString,
            )
        return [
            grpc.method_handlers_generic_handler(service, methods)
            for service, methods in handlers.items()
        ]

    def _wrap(self, method: str, function: Callable) -> Callable:
        def handle(request, context):
            with self._counts_lock:
                self._rpc_counts[method] += 1
            self._faults.apply(method, context)
            return function(request, context)

        return handle
