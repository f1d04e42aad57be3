"""Fast decoding of valid request bodies with msgspec, and the raw rows built from them.

``collector.models`` is the contract: its pydantic models validate every event that this
module does not accept, name the failing field of each rejected event, and generate the
JSON Schemas. This module contains msgspec structs with the same fields and limits. They
decode a valid body in about a quarter of the time pydantic takes (docs/benchmarks.md), and
the garbage collector does not track them. They may reject more than the models, never
less: a body that any struct rejects, or whose events break a rule that the models check in
Python, is validated again by the models, which then accept it or report why not.
Purchases are left to the models, because their amount takes a decimal text check.

``tests/test_fastpath.py`` checks that both agree field by field and, on generated valid
and broken events, that every body this module accepts gives the same rows as the models.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import msgspec
from msgspec import Meta, Struct

from collector import models

# Largest finite float: the limit keeps out JSON numbers such as 1e999 that read as infinity.
_FLOAT_MAX = sys.float_info.max

Id128 = Annotated[str, Meta(min_length=1, max_length=128)]
Count = Annotated[int, Meta(ge=1, le=10_000_000)]
ShortText = Annotated[str, Meta(max_length=512)]
UrlText = Annotated[str, Meta(max_length=2048)]
Timestamp = Annotated[datetime, Meta(tz=True)]
NonNegative = Annotated[float, Meta(ge=0, le=_FLOAT_MAX)]
Positive = Annotated[float, Meta(gt=0, le=_FLOAT_MAX)]


class _Strict(Struct, forbid_unknown_fields=True, gc=False):
    pass


class _Properties(Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    # Properties left out or sent as null are left out of the row, as the models' rows do.
    pass


class Content(_Strict):
    content_id: Id128
    content_type: Literal["book", "audio", "video"]
    title: ShortText | None = None
    author: ShortText | None = None
    genre: Annotated[str, Meta(max_length=128)] | None = None
    duration_seconds: NonNegative | None = None
    page_count: Count | None = None


class Context(_Strict):
    page_url: UrlText | None = None
    referrer: UrlText | None = None
    locale: Annotated[str, Meta(max_length=35)] | None = None
    timezone: Annotated[str, Meta(max_length=64)] | None = None
    platform: Literal["web", "ios", "android"] | None = None
    app_version: Annotated[str, Meta(max_length=64)] | None = None
    user_agent: Annotated[str, Meta(max_length=1024)] | None = None


class NoProperties(_Properties):
    pass


class SessionEndProperties(_Properties):
    duration_seconds: NonNegative


class BookOpenedProperties(_Properties):
    format: Literal["epub", "pdf", "web"] | None = None
    resume_page: Count | None = None


class PageTurnedProperties(_Properties):
    page_number: Count
    page_count: Count
    direction: Literal["forward", "backward"] | None = None
    seconds_on_page: NonNegative | None = None


class AudioProperties(_Properties):
    position_seconds: NonNegative
    duration_seconds: Positive
    playback_rate: Annotated[float, Meta(ge=0.25, le=4)] | None = None


class VideoProperties(_Properties):
    position_seconds: NonNegative
    duration_seconds: Positive
    playback_rate: Annotated[float, Meta(ge=0.25, le=4)] | None = None
    quality: Annotated[str, Meta(max_length=32)] | None = None


class ChapterCompletedProperties(_Properties):
    chapter_index: Count
    chapter_count: Count


class Event(_Strict, tag_field="event_name", kw_only=True):
    """The envelope that every event struct shares."""

    # The same class attributes as the models' envelope, read by models.envelope_error.
    event_name: ClassVar[str]
    content_types: ClassVar[frozenset[str] | None] = None
    content_required: ClassVar[bool] = False
    session_required: ClassVar[bool] = True
    model: ClassVar[type[models._Envelope]]

    event_id: UUID
    occurred_at: Timestamp
    sent_at: Timestamp | None = None
    user_id: Id128 | None = None
    anonymous_id: Id128 | None = None
    session_id: Id128 | None = None
    content: Content | None = None
    context: Context | None = None


def _envelope(model: type[models._Envelope], properties: type) -> type[Event]:
    """Define the struct of one event kind: the envelope plus ``properties``, tagged by name."""
    name = model.model_fields["event_name"].annotation.__args__[0]  # type: ignore[union-attr]
    if model.model_fields["properties"].is_required():
        field: tuple[str, type] | tuple[str, type, object] = ("properties", properties)
    else:
        field = ("properties", properties, msgspec.field(default_factory=properties))
    traits = {
        "event_name": name,
        "content_types": model.content_types,
        "content_required": model.content_required,
        "session_required": model.session_required,
        "model": model,
    }
    struct: type[Event] = msgspec.defstruct(  # type: ignore[assignment]
        model.__name__,
        [field],
        bases=(Event,),
        module=__name__,
        namespace=traits,
        tag=name,
    )
    return struct


SessionStart = _envelope(models.SessionStart, NoProperties)
SessionEnd = _envelope(models.SessionEnd, SessionEndProperties)
BookOpened = _envelope(models.BookOpened, BookOpenedProperties)
PageTurned = _envelope(models.PageTurned, PageTurnedProperties)
AudioPlayed = _envelope(models.AudioPlayed, AudioProperties)
AudioPaused = _envelope(models.AudioPaused, AudioProperties)
VideoPlayed = _envelope(models.VideoPlayed, VideoProperties)
VideoPaused = _envelope(models.VideoPaused, VideoProperties)
ChapterCompleted = _envelope(models.ChapterCompleted, ChapterCompletedProperties)

STRUCTS: dict[str, type[Event]] = {
    struct.event_name: struct
    for struct in (
        SessionStart,
        SessionEnd,
        BookOpened,
        PageTurned,
        AudioPlayed,
        AudioPaused,
        VideoPlayed,
        VideoPaused,
        ChapterCompleted,
    )
}

# The union that msgspec decodes; the tag picks the struct.
FastEvent: Any = (
    SessionStart
    | SessionEnd
    | BookOpened
    | PageTurned
    | AudioPlayed
    | AudioPaused
    | VideoPlayed
    | VideoPaused
    | ChapterCompleted
)


class Batch(_Strict):
    events: list[FastEvent]
    sent_at: Timestamp | None = None
    key: Annotated[str, Meta(max_length=256)] | None = None


_EVENT = msgspec.json.Decoder(FastEvent)
_LIST = msgspec.json.Decoder(list[FastEvent])
_BATCH = msgspec.json.Decoder(Batch)
_ENCODER = msgspec.json.Encoder()

# msgspec rounds fractions of a second beyond microseconds and pydantic cuts them off, so a
# body with a time written to more than 6 decimal places is left to the models. The pattern
# wants the time's UTC offset right after the digits, so plain numbers with many decimals
# stay on the fast path. A body with any backslash goes to the models too, because an escape
# such as \u0035 could hide a digit of such a time. A single-byte search costs far less than
# a pattern: 0.2 us against 3 us on the 20-event benchmark body.
_LONG_FRACTION = re.compile(rb"\.[0-9]{7,}[Zz+-]")

# Python rules of the models that msgspec constraints cannot express, per properties struct.
_PROPERTY_RULES: dict[type, Callable[[Any], object]] = {
    PageTurnedProperties: models.page_range_error,
    ChapterCompletedProperties: models.chapter_range_error,
}


def decode(body: bytes, start: int) -> tuple[list[Event], datetime | None, str | None] | None:
    """Decode ``body`` whose first non-blank byte is ``start``: events, batch sent_at and key.

    Returns None when the structs reject the body, or when one of its events breaks a rule
    that the models check in Python. The caller then validates the body with the models.
    """
    sent_at = key = None
    events: list[Event]
    try:
        if start == 0x5B:  # "["
            events = _LIST.decode(body)
        elif b'"events"' in body:
            batch = _BATCH.decode(body)
            events, sent_at, key = batch.events, batch.sent_at, batch.key
        else:
            events = [_EVENT.decode(body)]
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        # msgspec raises RecursionError while skipping a value nested about 1,000 deep; the
        # models reject such an event with a message.
        return None
    if b"\\" in body or _LONG_FRACTION.search(body) is not None:
        return None
    for event in events:
        if event.event_id.int == 0 or models.envelope_error(event) is not None:
            return None
        properties = event.properties  # type: ignore[attr-defined]
        rule = _PROPERTY_RULES.get(type(properties))
        if rule is not None and rule(properties) is not None:
            return None
    return events, sent_at, key


def encode_rows(
    events: list[tuple[int, Event]],
    batch_sent_at: datetime | None,
    received_at: datetime,
    earliest: datetime,
    latest: datetime,
    server_columns: bytes,
) -> list[bytes | None]:
    """Return the raw row of each event, or None where its time needs checking.

    A row is the event's fields with its times in UTC, ``occurred_at_corrected`` and
    ``server_columns``: a comma, the server's members and the closing brace. The structs'
    ``occurred_at`` and ``sent_at`` are set to the row's values. An event
    whose corrected time falls outside ``earliest`` to ``latest``, or leaves years 1-9999,
    gets None: ``row_json`` then raises the TimeRangeError that names the reason.
    """
    rows: list[bytes | None] = []
    append = rows.append
    encode = _ENCODER.encode
    for _, event in events:
        sent_at = event.sent_at or batch_sent_at
        occurred_at = event.occurred_at
        try:
            corrected = occurred_at if sent_at is None else received_at - (sent_at - occurred_at)
            if corrected > latest or corrected < earliest:
                append(None)
                continue
            if occurred_at.tzinfo is not UTC and occurred_at.utcoffset():
                event.occurred_at = occurred_at.astimezone(UTC)
            if sent_at is not None and sent_at.tzinfo is not UTC and sent_at.utcoffset():
                sent_at = sent_at.astimezone(UTC)
            if corrected.tzinfo is not UTC and corrected.utcoffset():
                corrected = corrected.astimezone(UTC)
        except OverflowError:
            append(None)
            continue
        event.sent_at = sent_at
        client = memoryview(encode(event))[:-1]
        append(b"".join((client, b',"occurred_at_corrected":', encode(corrected), server_columns)))
    return rows


def payload(event: Event) -> bytes:
    """Encode the event as JSON, for a rejection's dead-letter record."""
    return _ENCODER.encode(event)
