"""Server-side fields added to each accepted event, and the published raw row."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from collector import fastpath
from collector.models import SCHEMA_VERSION

# Column order of the published row; schemas/book_media_events.json lists the same columns.
ROW_COLUMNS = (
    "event_id",
    "event_name",
    "occurred_at",
    "sent_at",
    "received_at",
    "occurred_at_corrected",
    "user_id",
    "anonymous_id",
    "session_id",
    "content",
    "context",
    "properties",
    "key_id",
    "client_ip",
    "user_agent",
    "is_bot",
    "schema_version",
)

_BOT_PATTERN = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|facebookexternalhit|bingpreview|mediapartners-google"
    r"|headlesschrome|lighthouse|pingdom|uptimerobot|ahrefs|semrush|yandex",
    re.IGNORECASE,
)


@lru_cache(maxsize=4096)
def is_bot(user_agent: str | None) -> bool:
    """Flag well-known crawlers, monitors and headless browsers by their User-Agent."""
    return bool(user_agent) and _BOT_PATTERN.search(user_agent) is not None  # type: ignore[arg-type]


@lru_cache(maxsize=65536)
def truncate_ip(address: str, mode: str) -> str | None:
    """Return the client address as stored: IPv4 to /24 and IPv6 to /48 in ``truncate`` mode."""
    if mode == "none":
        return None
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if mode == "full":
        return str(ip)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def client_address(forwarded_for: str | None, peer: str | None, trusted_hops: int) -> str | None:
    """Pick the client address from X-Forwarded-For, counting ``trusted_hops`` from the right.

    Google's external Application Load Balancer appends ``<client>,<balancer>`` to whatever
    the client sent, so behind it the client is the second entry from the right
    (``trusted_hops=2``). Entries further left were written by the client and are ignored.
    With ``trusted_hops=0``, or a header with fewer entries, the TCP peer address is used.
    """
    if trusted_hops <= 0 or not forwarded_for:
        return peer
    entries = forwarded_for.split(",")
    if len(entries) < trusted_hops:
        return peer
    return entries[-trusted_hops].strip() or peer


@dataclass(slots=True)
class RequestContext:
    """Server-side facts about the request, shared by all of its events."""

    received_at: datetime
    key_id: str
    client_ip: str | None
    user_agent: str | None
    is_bot: bool
    # The row's server columns as JSON: a comma, then the members, then the closing brace.
    row_tail: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        members = orjson.dumps(
            {
                "received_at": self.received_at,
                "key_id": self.key_id,
                "client_ip": self.client_ip,
                "user_agent": self.user_agent,
                "is_bot": self.is_bot,
                "schema_version": SCHEMA_VERSION,
            },
            option=orjson.OPT_UTC_Z,
        )
        self.row_tail = b"," + members[1:]


class TimeRangeError(ValueError):
    """The corrected event time is too far in the future or the past."""


def _utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    return value if not offset else value.astimezone(UTC)


def corrected_time(
    occurred_at: datetime,
    sent_at: datetime | None,
    received_at: datetime,
    max_future: timedelta,
    max_past: timedelta,
) -> datetime:
    """Return ``occurred_at`` moved by the client's clock skew (``received_at - sent_at``).

    Raises TimeRangeError when the corrected time is more than ``max_future`` ahead of or
    ``max_past`` behind the server clock.
    """
    if sent_at is not None:
        try:
            corrected = received_at - (sent_at - occurred_at)
        except OverflowError:
            # The client clocks are so far apart that the corrected time leaves year 1-9999.
            raise TimeRangeError("sent_at and occurred_at are too far apart") from None
    else:
        corrected = occurred_at
    if corrected - received_at > max_future:
        raise TimeRangeError(
            f"occurred_at is more than {int(max_future.total_seconds())} seconds in the future "
            "after clock-skew correction"
        )
    if received_at - corrected > max_past:
        raise TimeRangeError(f"occurred_at is more than {max_past.days} days in the past")
    return corrected


_OUTSIDE_UTC = "occurred_at or sent_at is outside years 1-9999 in UTC"
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def row_json(
    event: Any,
    batch_sent_at: datetime | None,
    request: RequestContext,
    max_future: timedelta,
    max_past: timedelta,
) -> bytes:
    """Return the published raw row of one validated event, a fast-path struct or a model.

    Raises TimeRangeError as ``corrected_time`` does, and orjson.JSONEncodeError for text
    that cannot be written as JSON.
    """
    if isinstance(event, fastpath.Event):
        received_at = request.received_at
        sent_at = event.sent_at or batch_sent_at
        # corrected_time raises the TimeRangeError that names the reason, so the bounds
        # passed to encode_rows only need to cover years 1-9999.
        corrected_time(event.occurred_at, sent_at, received_at, max_future, max_past)
        (row,) = fastpath.encode_rows(
            [(0, event)], batch_sent_at, received_at, _EARLIEST, _LATEST, request.row_tail
        )
        if row is None:
            # A UTC offset moves a timestamp at the edge of years 1-9999 out of range.
            raise TimeRangeError(_OUTSIDE_UTC)
        return row
    return encode_row(build_row(event, batch_sent_at, request, max_future, max_past))


def build_row(
    event: Any,
    batch_sent_at: datetime | None,
    request: RequestContext,
    max_future: timedelta,
    max_past: timedelta,
) -> dict[str, Any]:
    """Return the raw row for one event validated by the models, with datetimes as objects.

    Raises TimeRangeError as ``corrected_time`` does.
    """
    sent_at = event.sent_at or batch_sent_at
    received_at = request.received_at
    occurred_at = event.occurred_at
    corrected = corrected_time(occurred_at, sent_at, received_at, max_future, max_past)
    try:
        occurred_utc = _utc(occurred_at)
        sent_utc = _utc(sent_at) if sent_at is not None else None
    except OverflowError:
        # A UTC offset moves a timestamp at the edge of years 1-9999 out of range.
        raise TimeRangeError(_OUTSIDE_UTC) from None

    row = event.model_dump()
    properties = row["properties"]
    for name in [name for name, value in properties.items() if value is None]:
        del properties[name]
    amount = properties.get("amount")
    if amount is not None:
        # Exact decimal as a string, so no float rounding happens on the way to NUMERIC.
        properties["amount"] = format(amount, "f")
    row["occurred_at"] = occurred_utc
    row["sent_at"] = sent_utc
    row["received_at"] = received_at
    row["occurred_at_corrected"] = _utc(corrected)
    row["key_id"] = request.key_id
    row["client_ip"] = request.client_ip
    row["user_agent"] = request.user_agent
    row["is_bot"] = request.is_bot
    row["schema_version"] = SCHEMA_VERSION
    return row


def encode_row(row: dict[str, Any]) -> bytes:
    """Serialize a row as one compact JSON object.

    Timestamps are UTC in RFC 3339 form with a ``Z`` (microseconds only when non-zero), the
    text form BigQuery TIMESTAMP columns take; UUIDs become their canonical string. No NaN or
    Infinity can occur because the models reject them.
    """
    return orjson.dumps(row, option=orjson.OPT_UTC_Z)
