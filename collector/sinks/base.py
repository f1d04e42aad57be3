"""The sink interface shared by the local file sink and the Pub/Sub sink."""

from __future__ import annotations

import abc
from typing import NamedTuple


class Message(NamedTuple):
    """One accepted event: the raw row as JSON, and its event name for message attributes."""

    data: bytes
    event_name: str


class SinkError(Exception):
    """The sink did not confirm the messages; the request gets 503 with Retry-After."""

    reason = "sink_error"


class SinkUnavailable(SinkError):
    """The sink failed to store or publish the messages."""

    reason = "sink_unavailable"


class SinkOverloaded(SinkError):
    """Too much work is in flight, or confirmation missed its deadline."""

    reason = "sink_overloaded"


class Sink(abc.ABC):
    """A batched, asynchronous destination that confirms every message it accepts.

    ``publish`` may be called by many requests at once; implementations group their
    messages into shared batches. It returns only when every message of the call is durable
    (fsynced, or acknowledged with a message id) and raises SinkError otherwise. The caller
    bounds the wait with its own deadline.
    """

    name: str = "sink"

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open files or connections; called once before the first publish."""

    @abc.abstractmethod
    async def publish(self, messages: list[Message]) -> None:
        """Store ``messages`` durably, or raise SinkError.

        The sink may empty the list once it has copied the rows, so the caller must not read
        it after the call.
        """

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """True while the sink is able to confirm new messages."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush pending messages and release resources."""

    wants_invalid: bool = False

    def publish_invalid(self, records: list[bytes]) -> None:  # noqa: B027 - optional hook
        """Send records of rejected events to a dead-letter destination, without waiting.

        ``records`` are JSON objects; sinks without a dead-letter destination ignore them and
        leave ``wants_invalid`` False so the handler does not build them.
        """

    def describe(self) -> dict[str, object]:
        """Settings worth logging at start-up."""
        return {"sink": self.name}
