"""Pub/Sub sink: one message per accepted event, published in shared batches.

Events from concurrent ``publish`` calls go into one open batch, which is sent as a single
PublishRequest when it reaches ``pubsub_batch_max_messages`` or ``pubsub_batch_max_bytes``, or
``pubsub_batch_max_latency`` seconds after its first message. At most
``MAX_CONCURRENT_REQUESTS`` Publish calls run at once. While every slot is busy, a due batch
stays open and keeps growing, so the batch size adapts to the service's latency. A caller
returns once Pub/Sub has returned a message id for every one of its messages.

The low-level ``PublisherAsyncClient`` is used instead of the high-level ``PublisherClient``
because it costs less CPU per message and runs on the event loop without helper threads.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import google.auth
import grpc
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.iam.v1 import iam_policy_pb2
from google.pubsub_v1.services.publisher import PublisherAsyncClient
from google.pubsub_v1.services.publisher.transports.grpc_asyncio import (
    PublisherGrpcAsyncIOTransport,
)
from google.pubsub_v1.types import pubsub

from collector.models import SCHEMA_VERSION
from collector.sinks.base import Message, Sink, SinkOverloaded, SinkUnavailable

if TYPE_CHECKING:
    from collector.settings import Settings

log = logging.getLogger("collector.sinks.pubsub")

EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"
PUBLISH_PERMISSION = "pubsub.topics.publish"

# Pub/Sub accepts at most 10,000,000 bytes per PublishRequest (_SERVER_PUBLISH_MAX_BYTES in
# google-cloud-pubsub 2.44, publisher/_batch/thread.py). The byte cap below leaves room for
# the request's own encoding.
# NOTE: the 1000-message cap is the one tests/pubsub_server enforces, taken from the Pub/Sub
# quotas page as other projects restate it, and was not checked against that page.
MAX_MESSAGES_PER_REQUEST = 1000
MAX_REQUEST_BYTES = 9 * 1024 * 1024
# Upper bound of one message's encoding beyond its data and its event_name value: 32 bytes of
# field tags and length prefixes, the two attribute keys and the schema_version value.
_MESSAGE_OVERHEAD_BYTES = 32 + len("event_name") + len("schema_version") + len(SCHEMA_VERSION)

MAX_CONCURRENT_REQUESTS = 16
DEFAULT_MAX_INFLIGHT_BYTES = 64 * 1024 * 1024

# Retry backoff in seconds: exponential with jitter, within pubsub_publish_timeout.
INITIAL_BACKOFF = 0.05
MAX_BACKOFF = 2.0
# Each Publish attempt gets sink_confirm_timeout, at least this many seconds.
MIN_ATTEMPT_TIMEOUT = 1.0

# Start-up tries the topic check for this long before start() returns and leaves the check to
# the background probe, which runs every PROBE_INTERVAL seconds while the sink is not ready.
START_CHECK_SECONDS = 3.0
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 1.0
# close() waits this long for pending batches. uvicorn's graceful shutdown (7 s) runs before
# it, and Cloud Run sends SIGKILL 10 s after SIGTERM.
DRAIN_SECONDS = 3.0

# Dead-letter queue for rejected events: records waiting to be published.
INVALID_QUEUE_MAX_RECORDS = 10_000
INVALID_QUEUE_MAX_BYTES = 16 * 1024 * 1024
INVALID_RECORD_MAX_BYTES = 64 * 1024
# Failed probes and dropped dead-letter records are each logged at most once per this many
# seconds, with a count of what was not logged.
LOG_INTERVAL = 10.0

RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    api_exceptions.ServiceUnavailable,
    api_exceptions.DeadlineExceeded,
    api_exceptions.InternalServerError,
    api_exceptions.Aborted,
    api_exceptions.ResourceExhausted,
    # Fetching an access token failed on the network.
    auth_exceptions.TransportError,
)

# Every other API error, and credentials that cannot be refreshed.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    api_exceptions.GoogleAPICallError,
    auth_exceptions.GoogleAuthError,
)

_PublishRequest = pubsub.PublishRequest.pb()
_batch_ids = itertools.count(1)


class PublishFailed(Exception):
    """A PublishRequest failed for good: a permanent error, or retries ran out of time."""


@dataclass(slots=True, eq=False)
class _Waiter:
    """One publish() call: its future and how many batches still carry its messages."""

    future: asyncio.Future[None]
    batches: int = 0


@dataclass(slots=True, eq=False)
class _Batch:
    """Messages for one PublishRequest and the callers waiting for them."""

    id: int
    request: Any
    waiters: list[_Waiter] = field(default_factory=list)
    count: int = 0
    size: int = 0
    finished: bool = False


class _RepeatLimiter:
    """Decide whether a repeated log line is due, counting the lines held back."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self.suppressed = 0
        self._last = -interval

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.interval:
            self.suppressed += 1
            return False
        self._last = now
        return True

    def take_suppressed(self) -> int:
        count, self.suppressed = self.suppressed, 0
        return count


class PubSubSink(Sink):
    """Publish each event's row to ``pubsub_topic`` and confirm it with its message id.

    ``publish`` raises SinkOverloaded at once when the unconfirmed messages or bytes would pass
    their bound, and SinkUnavailable when Pub/Sub rejects a batch or retries run out of time.
    Call every method from the event loop that ran ``start``.
    """

    name = "pubsub"

    def __init__(
        self,
        settings: Settings,
        *,
        max_inflight_messages: int | None = None,
        max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
        max_concurrent_requests: int = MAX_CONCURRENT_REQUESTS,
    ) -> None:
        if not settings.pubsub_topic:
            raise ValueError("COLLECTOR_PUBSUB_TOPIC is required for the Pub/Sub sink")
        self.topic: str = settings.pubsub_topic
        self.invalid_topic: str | None = settings.pubsub_invalid_topic
        # The handler builds dead-letter records only when this is true.
        self.wants_invalid = self.invalid_topic is not None
        self.batch_max_messages = min(settings.pubsub_batch_max_messages, MAX_MESSAGES_PER_REQUEST)
        self.batch_max_bytes = min(settings.pubsub_batch_max_bytes, MAX_REQUEST_BYTES)
        self.batch_max_latency = settings.pubsub_batch_max_latency
        self.publish_timeout = settings.pubsub_publish_timeout
        self.attempt_timeout = min(
            max(settings.sink_confirm_timeout, MIN_ATTEMPT_TIMEOUT), settings.pubsub_publish_timeout
        )
        self.max_inflight_messages = max_inflight_messages or settings.max_inflight_events
        self.max_inflight_bytes = max_inflight_bytes
        self.max_concurrent_requests = max_concurrent_requests
        self.emulator_host = os.environ.get(EMULATOR_ENV) or None

        self._client: PublisherAsyncClient | None = None
        self._ready = False
        self._closing = False
        self._closed = False
        self._attributes: dict[str, dict[str, str]] = {}

        # Main topic: the open batch, full or due batches waiting for a slot, running calls.
        self._open: _Batch | None = None
        self._open_due = False
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: deque[_Batch] = deque()
        self._tasks: dict[asyncio.Task[None], _Batch] = {}
        self._active_requests = 0
        # Set when close() stops waiting, so that no Publish call starts after that.
        self._stopped = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._inflight_messages = 0
        self._inflight_bytes = 0

        # Dead-letter topic: a bounded queue drained by one task.
        self._invalid_queue: deque[bytes] = deque()
        self._invalid_queue_bytes = 0
        self._invalid_wakeup = asyncio.Event()
        self._invalid_task: asyncio.Task[None] | None = None
        self._invalid_drop_log = _RepeatLimiter()

        self._probe_task: asyncio.Task[None] | None = None
        self._probe_log = _RepeatLimiter()

        self.counters: dict[str, int] = dict.fromkeys(
            (
                "published_messages",
                "published_batches",
                "failed_messages",
                "overloaded_calls",
                "retries",
                "invalid_published",
                "invalid_failed",
                "invalid_dropped",
            ),
            0,
        )

    # Sink interface

    @property
    def ready(self) -> bool:
        return self._ready and not self._closing

    def describe(self) -> dict[str, object]:
        details: dict[str, object] = {
            "sink": self.name,
            "topic": self.topic,
            "invalid_topic": self.invalid_topic,
            "batch_max_messages": self.batch_max_messages,
            "batch_max_bytes": self.batch_max_bytes,
            "batch_max_latency": self.batch_max_latency,
            "publish_timeout": self.publish_timeout,
            "attempt_timeout": self.attempt_timeout,
            "max_inflight_messages": self.max_inflight_messages,
            "max_inflight_bytes": self.max_inflight_bytes,
            "max_concurrent_requests": self.max_concurrent_requests,
        }
        if self.emulator_host:
            details["emulator_host"] = self.emulator_host
        return details

    async def start(self) -> None:
        """Create the client and check the topic for up to START_CHECK_SECONDS.

        The sink stays not ready when the check fails, and a background probe repeats it every
        PROBE_INTERVAL seconds. Raises google.auth's DefaultCredentialsError when no
        credentials are found outside the emulator.
        """
        log.info("Pub/Sub sink starting", extra=self.describe())
        try:
            self._client = await self._create_client()
        except auth_exceptions.DefaultCredentialsError as exc:
            log.error(
                "no Google Cloud credentials found; run with a service account, set "
                "GOOGLE_APPLICATION_CREDENTIALS, or set PUBSUB_EMULATOR_HOST for the emulator",
                extra={"topic": self.topic, "error": str(exc)},
            )
            raise
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_CHECK_SECONDS
        while True:
            timeout = max(0.1, min(PROBE_TIMEOUT, deadline - loop.time()))
            error, permanent = await self._check_topic(self.topic, timeout)
            if error is None:
                self._set_ready(True, "the topic accepts publishing")
                break
            if permanent or loop.time() + 0.2 >= deadline:
                log.error(
                    "Pub/Sub topic check failed at start-up; requests get 503 until it passes",
                    extra={"topic": self.topic, "error": error, "probe_interval": PROBE_INTERVAL},
                )
                break
            await asyncio.sleep(0.2)
        self._probe_task = asyncio.create_task(self._probe_loop(), name="pubsub-probe")
        if self.invalid_topic:
            self._invalid_task = asyncio.create_task(
                self._invalid_loop(), name="pubsub-invalid-publisher"
            )

    async def publish(self, messages: list[Message]) -> None:
        if self._closing:
            raise SinkUnavailable("the Pub/Sub sink is shutting down")
        if self._client is None:
            raise SinkUnavailable("the Pub/Sub sink is not started")
        if not messages:
            return

        count = len(messages)
        size = sum(len(message.data) + len(message.event_name) for message in messages)
        size += count * _MESSAGE_OVERHEAD_BYTES
        if (
            self._inflight_messages + count > self.max_inflight_messages
            or self._inflight_bytes + size > self.max_inflight_bytes
        ):
            self.counters["overloaded_calls"] += 1
            raise SinkOverloaded(
                f"{self._inflight_messages} messages ({self._inflight_bytes} bytes) are waiting "
                "for Pub/Sub"
            )

        waiter = _Waiter(asyncio.get_running_loop().create_future())
        self._inflight_messages += count
        self._inflight_bytes += size
        self._idle.clear()
        self._add(messages, waiter)

        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                # Mark the exception as retrieved so asyncio does not log it at collection.
                waiter.future.exception()
            raise

    async def close(self) -> None:
        """Send pending batches, wait up to DRAIN_SECONDS for them, then close the channel."""
        if self._closed:
            return
        self._closing = True
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS

        # Send the open batch now instead of waiting for its timer.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._open_due = True
        self._dispatch()
        self._invalid_wakeup.set()
        await _wait_until(self._idle.wait(), deadline)

        self._stopped = True
        unfinished = self._active_requests + len(self._waiting)
        await self._cancel_tasks()
        self._fail_waiting_batches()
        if self._invalid_task is not None:
            await _wait_until(self._invalid_task, deadline)
            self._invalid_task = None

        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
            self._probe_task = None
        if self._client is not None:
            await self._client.transport.close()
        log.info(
            "Pub/Sub sink closed",
            extra={
                "topic": self.topic,
                "unfinished_batches": unfinished,
                "invalid_records_lost": len(self._invalid_queue),
                **self.counters,
            },
        )

    # Dead-letter topic

    def publish_invalid(self, records: list[bytes]) -> None:
        """Queue rejected-event records for the dead-letter topic without waiting.

        Each record becomes the data of one message. Does nothing when no dead-letter topic is
        set. Records are dropped and counted in ``counters["invalid_dropped"]`` when the sink is
        not running, a record is empty or over INVALID_RECORD_MAX_BYTES, or the queue is full.
        Never raises for a list of bytes.
        """
        if not records or not self.invalid_topic:
            return
        dropped = 0
        if self._invalid_task is None or self._closing:
            dropped = len(records)
        else:
            for record in records:
                size = len(record)
                if (
                    size == 0
                    or size > INVALID_RECORD_MAX_BYTES
                    or len(self._invalid_queue) >= INVALID_QUEUE_MAX_RECORDS
                    or self._invalid_queue_bytes + size > INVALID_QUEUE_MAX_BYTES
                ):
                    dropped += 1
                    continue
                self._invalid_queue.append(record)
                self._invalid_queue_bytes += size
            self._invalid_wakeup.set()
        if dropped:
            self.counters["invalid_dropped"] += dropped
            if self._invalid_drop_log.due():
                log.warning(
                    "rejected-event records dropped: the dead-letter queue is full, a record is "
                    "empty or too large, or the sink is not running",
                    extra={
                        "topic": self.invalid_topic,
                        "dropped": dropped,
                        "dropped_total": self.counters["invalid_dropped"],
                        "queue_records": len(self._invalid_queue),
                        "queue_bytes": self._invalid_queue_bytes,
                    },
                )

    # Batching

    def _add(self, messages: list[Message], waiter: _Waiter) -> None:
        batch = self._open
        for message in messages:
            size = len(message.data) + len(message.event_name) + _MESSAGE_OVERHEAD_BYTES
            if batch is not None and (
                batch.count >= self.batch_max_messages or batch.size + size > self.batch_max_bytes
            ):
                self._seal()
                batch = None
            if batch is None:
                batch = self._new_open_batch()
            if not batch.waiters or batch.waiters[-1] is not waiter:
                batch.waiters.append(waiter)
                waiter.batches += 1
            attributes = self._attributes.get(message.event_name)
            if attributes is None:
                attributes = {"event_name": message.event_name, "schema_version": SCHEMA_VERSION}
                self._attributes[message.event_name] = attributes
            batch.request.messages.add(data=message.data, attributes=attributes)
            batch.count += 1
            batch.size += size
        if batch is not None and batch.count >= self.batch_max_messages:
            self._seal()
        self._dispatch()

    def _new_open_batch(self) -> _Batch:
        batch = _Batch(next(_batch_ids), _PublishRequest(topic=self.topic))
        self._open = batch
        self._open_due = False
        # A latency of 0 still groups the publish() calls of one event loop iteration.
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.batch_max_latency, self._on_timer, batch)
        return batch

    def _on_timer(self, batch: _Batch) -> None:
        self._timer = None
        if self._open is batch:
            self._open_due = True
            self._dispatch()

    def _seal(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._open is not None and self._open.count:
            self._waiting.append(self._open)
        self._open = None
        self._open_due = False

    def _dispatch(self) -> None:
        """Start Publish calls for waiting batches, then for the open batch once it is due."""
        while not self._stopped and self._active_requests < self.max_concurrent_requests:
            if not self._waiting:
                if not (self._open_due and self._open is not None):
                    break
                self._seal()
                continue
            batch = self._waiting.popleft()
            self._active_requests += 1
            task = asyncio.get_running_loop().create_task(self._publish_batch(batch))
            self._tasks[task] = batch
            task.add_done_callback(self._forget_task)
        self._update_idle()

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    def _update_idle(self) -> None:
        if not self._active_requests and not self._waiting and self._open is None:
            self._idle.set()

    async def _publish_batch(self, batch: _Batch) -> None:
        error: Exception | None = None
        try:
            await self._send(self.topic, batch.request, batch.id, batch.count, main_topic=True)
        except PublishFailed as exc:
            error = exc
        except asyncio.CancelledError:
            error = PublishFailed("the sink shut down before Pub/Sub confirmed the batch")
            raise
        except Exception as exc:
            log.exception(
                "unexpected error while publishing a batch",
                extra={"topic": self.topic, "batch_id": batch.id, "messages": batch.count},
            )
            error = exc
        finally:
            self._active_requests -= 1
            self._finish_batch(batch, error)
            self._dispatch()

    def _finish_batch(self, batch: _Batch, error: Exception | None) -> None:
        batch.finished = True
        self._inflight_messages -= batch.count
        self._inflight_bytes -= batch.size
        if error is None:
            self.counters["published_messages"] += batch.count
            self.counters["published_batches"] += 1
            for waiter in batch.waiters:
                waiter.batches -= 1
                if waiter.batches == 0 and not waiter.future.done():
                    waiter.future.set_result(None)
            return
        self.counters["failed_messages"] += batch.count
        for waiter in batch.waiters:
            # A caller that gave up has a cancelled future and is skipped.
            if not waiter.future.done():
                waiter.future.set_exception(
                    SinkUnavailable(f"publishing to Pub/Sub failed: {error}")
                )

    def _fail_waiting_batches(self) -> None:
        batches = list(self._waiting)
        self._waiting.clear()
        if self._open is not None and self._open.count:
            batches.append(self._open)
        self._open = None
        for batch in batches:
            self._finish_batch(batch, PublishFailed("the sink shut down before sending the batch"))
        self._update_idle()

    async def _cancel_tasks(self) -> None:
        running = {task: batch for task, batch in self._tasks.items() if not task.done()}
        if not running:
            return
        log.warning(
            "Pub/Sub sink cancelled unconfirmed batches at shutdown",
            extra={"topic": self.topic, "batches": len(running)},
        )
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        # A task cancelled before its first step never runs its finally block.
        for batch in running.values():
            if not batch.finished:
                self._active_requests -= 1
                self._finish_batch(batch, PublishFailed("the sink shut down before sending it"))

    # Publishing with retries

    async def _send(
        self, topic: str, request: Any, batch_id: int, count: int, *, main_topic: bool
    ) -> None:
        """Publish ``request``, retrying transient errors until ``publish_timeout`` has passed.

        A response without one message id per message counts as a transient error. Raises
        PublishFailed on a permanent error, or when transient errors last until the deadline.
        Failures on the main topic mark the sink not ready, and a success marks it ready.
        """
        assert self._client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        wrapped = pubsub.PublishRequest.wrap(request)
        backoff = INITIAL_BACKOFF
        attempt = 0
        while True:
            attempt += 1
            timeout = min(self.attempt_timeout, max(deadline - loop.time(), 0.05))
            try:
                response = await self._client.publish(request=wrapped, retry=None, timeout=timeout)
            except RETRYABLE_ERRORS as exc:
                error = _describe_error(exc)
            except PERMANENT_ERRORS as exc:
                error = _describe_error(exc)
                invalid = isinstance(exc, api_exceptions.InvalidArgument)
                log.error(
                    "Pub/Sub rejected a batch",
                    extra={
                        "topic": topic,
                        "batch_id": batch_id,
                        "messages": count,
                        "attempt": attempt,
                        "error": error,
                    },
                )
                # An invalid request does not show that the topic is unreachable, so readiness
                # stays as it is.
                if main_topic and not invalid:
                    self._set_ready(False, f"Publish failed: {error}")
                raise PublishFailed(error) from None
            else:
                received = len(response.message_ids)
                if received == count:
                    if main_topic and not self._ready and not self._closing:
                        self._set_ready(True, "Publish succeeded")
                    return
                error = f"the response has {received} message ids for {count} messages"

            if main_topic:
                self._set_ready(False, f"Publish failed: {error}")
            remaining = deadline - loop.time()
            delay = backoff * (0.5 + random.random() / 2)  # noqa: S311  # nosec B311  # jitter only
            if remaining <= delay:
                log.error(
                    "Pub/Sub batch failed; retries ran out of time",
                    extra={
                        "topic": topic,
                        "batch_id": batch_id,
                        "messages": count,
                        "attempt": attempt,
                        "publish_timeout": self.publish_timeout,
                        "error": error,
                    },
                )
                raise PublishFailed(f"{error} (gave up after {attempt} attempts)")
            self.counters["retries"] += 1
            log.warning(
                "Pub/Sub publish failed; retrying",
                extra={
                    "topic": topic,
                    "batch_id": batch_id,
                    "messages": count,
                    "attempt": attempt,
                    "retry_in_seconds": round(delay, 3),
                    "error": error,
                },
            )
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, MAX_BACKOFF)

    # Dead-letter publishing

    async def _invalid_loop(self) -> None:
        assert self.invalid_topic is not None
        while True:
            if not self._invalid_queue:
                if self._closing:
                    return
                self._invalid_wakeup.clear()
                await self._invalid_wakeup.wait()
                continue
            request = _PublishRequest(topic=self.invalid_topic)
            count = 0
            size = 0
            while self._invalid_queue and count < self.batch_max_messages:
                record = self._invalid_queue[0]
                if count and size + len(record) + 16 > self.batch_max_bytes:
                    break
                self._invalid_queue.popleft()
                self._invalid_queue_bytes -= len(record)
                request.messages.add(data=record)
                count += 1
                size += len(record) + 16
            batch_id = next(_batch_ids)
            try:
                await self._send(self.invalid_topic, request, batch_id, count, main_topic=False)
            except PublishFailed:
                # _send has logged the error with the batch id.
                self.counters["invalid_failed"] += count
            except asyncio.CancelledError:
                self.counters["invalid_failed"] += count
                raise
            else:
                self.counters["invalid_published"] += count

    # Readiness

    def _set_ready(self, ready: bool, reason: str) -> None:
        if ready == self._ready:
            return
        self._ready = ready
        if ready:
            log.info("Pub/Sub sink is ready", extra={"topic": self.topic, "reason": reason})
        else:
            log.warning(
                "Pub/Sub sink is not ready; requests get 503",
                extra={"topic": self.topic, "reason": reason},
            )

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            if self._ready or self._closing:
                continue
            try:
                error, _ = await self._check_topic(self.topic, PROBE_TIMEOUT)
            except Exception as exc:
                log.exception("Pub/Sub topic check raised", extra={"topic": self.topic})
                error = _describe_error(exc)
            if error is None:
                if self._closing:
                    continue
                self._set_ready(True, "the topic check passed")
                continue
            if self._probe_log.due():
                log.warning(
                    "Pub/Sub topic check failed; probing again",
                    extra={
                        "topic": self.topic,
                        "error": error,
                        "failures_not_logged": self._probe_log.take_suppressed(),
                    },
                )

    async def _check_topic(self, topic: str, timeout: float) -> tuple[str | None, bool]:
        """Ask Pub/Sub whether the credentials may publish to ``topic``.

        Returns (None, False) when they may, else an error message and whether retrying
        cannot help without a change (a missing topic or a missing permission). The check
        tests only pubsub.topics.publish, the permission that publishing needs.
        """
        assert self._client is not None
        request = iam_policy_pb2.TestIamPermissionsRequest(
            resource=topic, permissions=[PUBLISH_PERMISSION]
        )
        try:
            response = await self._client.test_iam_permissions(
                request=request, retry=None, timeout=timeout
            )
        except RETRYABLE_ERRORS as exc:
            return _describe_error(exc), False
        except PERMANENT_ERRORS as exc:
            return _describe_error(exc), True
        if PUBLISH_PERMISSION not in response.permissions:
            # Pub/Sub returns an empty list, not NOT_FOUND, for a topic that does not exist.
            return (
                f"{PUBLISH_PERMISSION} is not granted on {topic}: the topic does not exist or "
                "the credentials lack the permission",
                True,
            )
        return None, False

    # Client

    async def _create_client(self) -> PublisherAsyncClient:
        if self.emulator_host:
            # The emulator takes plain gRPC without credentials. With a channel given, the
            # transport attaches no credentials and skips the Application Default Credentials
            # lookup. Proxy variables are ignored because the emulator is a local service.
            channel = grpc.aio.insecure_channel(
                self.emulator_host, options=[("grpc.enable_http_proxy", 0)]
            )
            transport = PublisherGrpcAsyncIOTransport(channel=channel, host=self.emulator_host)
            return PublisherAsyncClient(transport=transport)
        # google.auth.default may call the metadata server, so it runs off the event loop.
        credentials, _ = await asyncio.to_thread(
            google.auth.default, default_scopes=PublisherGrpcAsyncIOTransport.AUTH_SCOPES
        )
        return PublisherAsyncClient(credentials=credentials)


async def _wait_until(awaitable: Any, deadline: float) -> None:
    """Await ``awaitable`` until the event loop time ``deadline``, then cancel it."""
    timeout = max(0.0, deadline - asyncio.get_running_loop().time())
    try:
        await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        pass


def _describe_error(exc: Exception) -> str:
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        status = exc.grpc_status_code
        code = status.name if status is not None else type(exc).__name__
        return f"{code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
