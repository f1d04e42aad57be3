"""Client event models: the shared envelope and the ten event kinds.

The models are strict: JSON strings are not coerced to numbers, unknown keys are rejected,
and timestamps must carry a UTC offset. One discriminated union on ``event_name`` picks the
model, so each event is validated once, straight from the request bytes.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    TypeAdapter,
    model_validator,
)
from pydantic_core import PydanticCustomError

SCHEMA_VERSION = "1"

EVENT_NAMES = (
    "session_start",
    "session_end",
    "book_opened",
    "page_turned",
    "audio_played",
    "audio_paused",
    "video_played",
    "video_paused",
    "chapter_completed",
    "purchase",
)

Id128 = Annotated[str, Field(min_length=1, max_length=128)]
# Page and chapter numbers: bounded so every value fits BigQuery's INT64 and DuckDB's BIGINT.
Count = Annotated[int, Field(ge=1, le=10_000_000)]
ShortText = Annotated[str, Field(max_length=512)]
UrlText = Annotated[str, Field(max_length=2048)]
Timestamp = AwareDatetime
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


# Rules across fields. They take any object with the models' attribute names, so the msgspec
# structs of collector.fastpath apply the same rules as the models.


def page_range_error(properties: Any) -> PydanticCustomError | None:
    """page_number must not pass page_count."""
    if properties.page_number > properties.page_count:
        return PydanticCustomError(
            "page_range", "page_number must be <= page_count", {"field": "page_number"}
        )
    return None


def chapter_range_error(properties: Any) -> PydanticCustomError | None:
    """chapter_index must not pass chapter_count."""
    if properties.chapter_index > properties.chapter_count:
        return PydanticCustomError(
            "chapter_range",
            "chapter_index must be <= chapter_count",
            {"field": "chapter_index"},
        )
    return None


def envelope_error(event: Any) -> PydanticCustomError | None:
    """Check for an identity, a session where the kind needs one, and content of its types."""
    if event.user_id is None and event.anonymous_id is None:
        return PydanticCustomError(
            "missing_identity", "user_id or anonymous_id is required", {"field": "user_id"}
        )
    if event.session_id is None and event.session_required:
        return PydanticCustomError(
            "missing_session", "session_id is required", {"field": "session_id"}
        )
    if event.content is None:
        if event.content_required:
            return PydanticCustomError(
                "missing_content", "content is required", {"field": "content"}
            )
    elif event.content_types is not None and event.content.content_type not in event.content_types:
        allowed = " or ".join(sorted(event.content_types))
        return PydanticCustomError(
            "content_type",
            "content_type must be {allowed} for {event_name}",
            {"field": "content.content_type", "allowed": allowed, "event_name": event.event_name},
        )
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Content(_Strict):
    """The book, audiobook or video an event is about."""

    content_id: Id128
    content_type: Literal["book", "audio", "video"]
    title: ShortText | None = None
    author: ShortText | None = None
    genre: Annotated[str, Field(max_length=128)] | None = None
    duration_seconds: NonNegative | None = None
    page_count: Count | None = None


class Context(_Strict):
    """Page and device context of the event, as the client reports it."""

    page_url: UrlText | None = None
    referrer: UrlText | None = None
    locale: Annotated[str, Field(max_length=35)] | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = None
    platform: Literal["web", "ios", "android"] | None = None
    app_version: Annotated[str, Field(max_length=64)] | None = None
    user_agent: Annotated[str, Field(max_length=1024)] | None = None


class NoProperties(_Strict):
    """Properties of an event that defines none: any key is rejected."""


class SessionEndProperties(_Strict):
    duration_seconds: NonNegative


class BookOpenedProperties(_Strict):
    format: Literal["epub", "pdf", "web"] | None = None
    resume_page: Count | None = None


class PageTurnedProperties(_Strict):
    page_number: Count
    page_count: Count
    direction: Literal["forward", "backward"] | None = None
    seconds_on_page: NonNegative | None = None

    @model_validator(mode="after")
    def _page_within_count(self) -> Self:
        error = page_range_error(self)
        if error is not None:
            raise error
        return self


class AudioProperties(_Strict):
    position_seconds: NonNegative
    duration_seconds: Positive
    playback_rate: Annotated[float, Field(ge=0.25, le=4, allow_inf_nan=False)] | None = None


class VideoProperties(AudioProperties):
    quality: Annotated[str, Field(max_length=32)] | None = None


class ChapterCompletedProperties(_Strict):
    chapter_index: Count
    chapter_count: Count

    @model_validator(mode="after")
    def _index_within_count(self) -> Self:
        error = chapter_range_error(self)
        if error is not None:
            raise error
        return self


def _plain_decimal_text(value: object) -> object:
    # Decimal() also reads " 1 ", "1_000" and non-ASCII digits; a wire format should not.
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
        raise PydanticCustomError(
            "decimal_text", "amount must be a decimal number such as 9.99, without spaces"
        )
    return value


def _not_nil(value: UUID) -> UUID:
    if value.int == 0:
        raise PydanticCustomError("nil_uuid", "event_id must not be the nil UUID")
    return value


_DECIMAL_TEXT = re.compile(r"[0-9]+(\.[0-9]+)?")

# BigQuery NUMERIC has 29 integer and 9 fractional digits.
Amount = Annotated[
    Decimal,
    BeforeValidator(_plain_decimal_text),
    Field(ge=0, max_digits=38, decimal_places=9, allow_inf_nan=False, strict=False),
]


class PurchaseProperties(_Strict):
    order_id: Id128
    product_type: Literal["subscription", "book", "audiobook"]
    amount: Amount
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    plan: Annotated[str, Field(max_length=128)] | None = None


class _Envelope(_Strict):
    """Fields every event carries. Subclasses fix ``event_name``, content and properties."""

    # Content types an event kind accepts; None means content is optional and of any type.
    content_types: ClassVar[frozenset[str] | None] = None
    content_required: ClassVar[bool] = False
    session_required: ClassVar[bool] = True

    event_id: Annotated[UUID, AfterValidator(_not_nil)]
    event_name: str
    occurred_at: Timestamp
    sent_at: Timestamp | None = None
    user_id: Id128 | None = None
    anonymous_id: Id128 | None = None
    session_id: Id128 | None = None
    content: Content | None = None
    context: Context | None = None

    @model_validator(mode="after")
    def _check_envelope(self) -> Self:
        error = envelope_error(self)
        if error is not None:
            raise error
        return self


class SessionStart(_Envelope):
    event_name: Literal["session_start"]
    properties: NoProperties = NoProperties()


class SessionEnd(_Envelope):
    event_name: Literal["session_end"]
    properties: SessionEndProperties


class BookOpened(_Envelope):
    content_types = frozenset({"book"})
    content_required = True
    event_name: Literal["book_opened"]
    properties: BookOpenedProperties = BookOpenedProperties()


class PageTurned(_Envelope):
    content_types = frozenset({"book"})
    content_required = True
    event_name: Literal["page_turned"]
    properties: PageTurnedProperties


class AudioPlayed(_Envelope):
    content_types = frozenset({"audio"})
    content_required = True
    event_name: Literal["audio_played"]
    properties: AudioProperties


class AudioPaused(AudioPlayed):
    event_name: Literal["audio_paused"]  # type: ignore[assignment]


class VideoPlayed(_Envelope):
    content_types = frozenset({"video"})
    content_required = True
    event_name: Literal["video_played"]
    properties: VideoProperties


class VideoPaused(VideoPlayed):
    event_name: Literal["video_paused"]  # type: ignore[assignment]


class ChapterCompleted(_Envelope):
    content_types = frozenset({"book", "audio"})
    content_required = True
    event_name: Literal["chapter_completed"]
    properties: ChapterCompletedProperties


class Purchase(_Envelope):
    session_required = False
    event_name: Literal["purchase"]
    properties: PurchaseProperties


EVENT_MODELS: dict[str, type[_Envelope]] = {
    "session_start": SessionStart,
    "session_end": SessionEnd,
    "book_opened": BookOpened,
    "page_turned": PageTurned,
    "audio_played": AudioPlayed,
    "audio_paused": AudioPaused,
    "video_played": VideoPlayed,
    "video_paused": VideoPaused,
    "chapter_completed": ChapterCompleted,
    "purchase": Purchase,
}


# A string discriminator is resolved inside pydantic-core, without a Python call per event.
Event = Annotated[
    SessionStart
    | SessionEnd
    | BookOpened
    | PageTurned
    | AudioPlayed
    | AudioPaused
    | VideoPlayed
    | VideoPaused
    | ChapterCompleted
    | Purchase,
    Discriminator("event_name"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
