"""Hypothesis strategies for client events, written from the rules in collector/models.py.

``valid_events`` draws events that every model rule accepts. ``broken_events`` draws a valid
event and breaks exactly one rule, paired with the field that the rejection must name in
``rejected[].errors[].field``. ``request_bodies`` wraps valid events in the three body shapes
the collector takes (one object, an array, a batch object), and ``encode_body`` serializes a
body in one of several JSON spellings.

Events are dicts as a client sends them. Lengths and bounds below repeat the model's
``Field`` constraints, so a change to a model rule makes these tests fail until the strategy
follows it.
"""

from __future__ import annotations

import json
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from collector.models import EVENT_MODELS, EVENT_NAMES

ID_MAX = 128
CONTENT_TEXT_MAX = {"title": 512, "author": 512, "genre": 128}
CONTEXT_TEXT_MAX = {
    "page_url": 2048,
    "referrer": 2048,
    "locale": 35,
    "timezone": 64,
    "app_version": 64,
    "user_agent": 1024,
}
CONTENT_PAGE_COUNT_MAX = 10_000_000
# Largest page or chapter number the models accept.
COUNT_MAX = 10_000_000
PLAN_MAX = 128
QUALITY_MAX = 32
PLAYBACK_RATE = (0.25, 4.0)
AMOUNT_WHOLE_DIGITS = 29
AMOUNT_DECIMAL_PLACES = 9
# pydantic reads JSON integers into a signed 64-bit value; larger ones are invalid.
INT64_MAX = 2**63 - 1
# Largest offset pydantic accepts on a timestamp: 23:59 either side of UTC.
OFFSET_MAX_MINUTES = 23 * 60 + 59

ENVELOPE_FIELDS = frozenset(
    {
        "event_id",
        "event_name",
        "occurred_at",
        "sent_at",
        "user_id",
        "anonymous_id",
        "session_id",
        "content",
        "context",
        "properties",
    }
)
CONTENT_TYPES = ("book", "audio", "video")
PLATFORMS = ("web", "ios", "android")
BOOK_FORMATS = ("epub", "pdf", "web")
DIRECTIONS = ("forward", "backward")
PRODUCT_TYPES = ("subscription", "book", "audiobook")

# The collector's default limits (collector/settings.py), used by the in-process tests.
MAX_EVENTS = 500
MAX_EVENT_BYTES = 32 * 1024

# Client clocks in the window tests run up to this far from the server's.
MAX_CLOCK_SKEW = timedelta(days=5 * 365)
# Event ages stay inside the 30-day window with a day to spare for slow test runs.
MAX_AGE = timedelta(days=29)
# An event may be stamped slightly after sent_at; the window allows 300 s in the future.
MAX_LEAD = timedelta(seconds=120)

_ABSENT = object()


# Text -----------------------------------------------------------------------------------

# Repeated characters exclude control characters, whose JSON escapes take 6 bytes each, so
# a full-length field cannot push a valid event over COLLECTOR_MAX_EVENT_BYTES.
_PRINTABLE = st.characters(exclude_categories=("Cs", "Cc"))


def texts(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Draw strings of ``min_size`` to ``max_size`` code points, the bounds included."""
    short = st.text(min_size=min_size, max_size=min(max_size, 40))
    full = _PRINTABLE.map(lambda char: char * max_size)
    smallest = _PRINTABLE.map(lambda char: char * min_size) if min_size else st.just("")
    return st.one_of(short, full, smallest)


def too_long(max_size: int) -> st.SearchStrategy[str]:
    """Draw strings longer than ``max_size`` code points."""
    return st.tuples(_PRINTABLE, st.integers(1, 64)).map(
        lambda pair: pair[0] * (max_size + pair[1])
    )


def ids() -> st.SearchStrategy[str]:
    return texts(ID_MAX, min_size=1)


def event_ids() -> st.SearchStrategy[str]:
    """Draw UUIDs in the spellings pydantic accepts: hyphens, none, braces or urn prefix."""
    return st.tuples(st.uuids().filter(lambda value: value.int != 0), st.integers(0, 4)).map(
        _spell_uuid
    )


def _spell_uuid(pair: tuple[uuid.UUID, int]) -> str:
    value, spelling = pair
    return [
        str(value),
        str(value).upper(),
        value.hex,
        "{" + str(value) + "}",
        value.urn,
    ][spelling]


# Timestamps -----------------------------------------------------------------------------


def _offset_text(minutes: int, zulu: str) -> str:
    if minutes == 0 and zulu:
        return zulu
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{rest:02d}"


def format_timestamp(
    moment: datetime, offset_minutes: int, fraction_digits: int, zulu: str = "Z"
) -> str:
    """Write ``moment`` in RFC 3339 form in the given UTC offset, without using strftime.

    ``strftime("%Y")`` does not zero-pad years before 1000 on glibc, so fields are written
    one by one. ``fraction_digits`` above 6 pads the microseconds with zeros.
    """
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    text = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}T"
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    )
    if fraction_digits:
        micros = f"{local.microsecond:06d}"
        text += "." + (micros + "0" * 12)[:fraction_digits]
    return text + _offset_text(offset_minutes, zulu)


@st.composite
def timestamps_at(draw: st.DrawFn, moment: datetime) -> str:
    """Draw a spelling of the instant ``moment``, truncated to whole seconds at worst."""
    offset = draw(st.integers(-OFFSET_MAX_MINUTES, OFFSET_MAX_MINUTES) | st.just(0))
    digits = draw(st.sampled_from([0, 1, 3, 6, 9]))
    zulu = draw(st.sampled_from(["Z", "z", ""]))
    return format_timestamp(moment, offset, digits, zulu)


@st.composite
def any_timestamps(draw: st.DrawFn) -> str:
    """Draw any timestamp pydantic accepts: years 0001 to 9999, offsets up to 23:59."""
    edges = st.sampled_from([datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)])
    local = draw(edges | st.datetimes(min_value=datetime(1, 1, 1)))
    offset = draw(
        st.sampled_from([-OFFSET_MAX_MINUTES, OFFSET_MAX_MINUTES])
        | st.integers(-OFFSET_MAX_MINUTES, OFFSET_MAX_MINUTES)
    )
    text = local.isoformat(timespec="microseconds")
    return text + _offset_text(offset, draw(st.sampled_from(["Z", ""])))


# Numbers --------------------------------------------------------------------------------

_FINITE = {"allow_nan": False, "allow_infinity": False}


def non_negative() -> st.SearchStrategy[float | int]:
    return st.one_of(st.integers(0, 2**53), st.floats(min_value=0, **_FINITE))


def positive() -> st.SearchStrategy[float | int]:
    return st.one_of(st.integers(1, 2**53), st.floats(min_value=0, exclude_min=True, **_FINITE))


def counts() -> st.SearchStrategy[int]:
    """Draw page and chapter numbers: mostly small, sometimes up to the models' maximum."""
    return st.one_of(st.integers(1, 2000), st.integers(1, COUNT_MAX))


@dataclass(frozen=True)
class Amount:
    """A purchase amount as sent (a decimal string or a JSON number) and its exact value."""

    sent: str | int | float
    value: Decimal


@st.composite
def amounts(draw: st.DrawFn) -> Amount:
    """Draw amounts with at most 29 whole digits and 9 decimal places, as the model allows.

    JSON-number amounts with a fraction keep to 15 significant digits, which a float64
    represents exactly, because pydantic reads a JSON number with a fraction through a float.
    """
    form = draw(st.sampled_from(["string", "integer", "float"]))
    if form == "string":
        places = draw(st.integers(0, AMOUNT_DECIMAL_PLACES))
        units = draw(st.integers(0, 10 ** (AMOUNT_WHOLE_DIGITS + places) - 1))
        # Written from the digits, because Decimal arithmetic rounds to 28 digits.
        digits = str(units).rjust(places + 1, "0")
        text = digits[: len(digits) - places] + ("." + digits[-places:] if places else "")
        return Amount(text, Decimal(text))
    if form == "integer":
        # Integers past 64 bits get their own branch: JSON parsers treat them differently.
        units = draw(st.integers(0, 10**6) | st.integers(2**64, 10**AMOUNT_WHOLE_DIGITS - 1))
        return Amount(units, Decimal(units))
    places = draw(st.integers(0, 6))
    units = draw(st.integers(0, 10 ** (15 - places) - 1))
    number = units / 10**places
    return Amount(number, Decimal(repr(number)))


# Objects --------------------------------------------------------------------------------


@st.composite
def _optional(draw: st.DrawFn, strategy: st.SearchStrategy[Any]) -> Any:
    """Draw an optional field: absent (``_ABSENT``), explicit null, or a value."""
    choice = draw(st.sampled_from(["absent", "null", "value", "value"]))
    if choice == "absent":
        return _ABSENT
    if choice == "null":
        return None
    return draw(strategy)


def _build(draw: st.DrawFn, fields: dict[str, Any]) -> dict[str, Any]:
    """Drop absent fields and put the rest in a drawn key order."""
    present = {key: value for key, value in fields.items() if value is not _ABSENT}
    order = draw(st.permutations(sorted(present)))
    return {key: present[key] for key in order}


@st.composite
def contents(draw: st.DrawFn, content_types: frozenset[str] | None = None) -> dict[str, Any]:
    allowed = sorted(content_types) if content_types is not None else list(CONTENT_TYPES)
    fields: dict[str, Any] = {
        "content_id": draw(ids()),
        "content_type": draw(st.sampled_from(allowed)),
        "duration_seconds": draw(_optional(non_negative())),
        "page_count": draw(_optional(st.integers(1, CONTENT_PAGE_COUNT_MAX))),
    }
    for name, limit in CONTENT_TEXT_MAX.items():
        fields[name] = draw(_optional(texts(limit)))
    return _build(draw, fields)


@st.composite
def contexts(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {"platform": draw(_optional(st.sampled_from(PLATFORMS)))}
    for name, limit in CONTEXT_TEXT_MAX.items():
        fields[name] = draw(_optional(texts(limit)))
    return _build(draw, fields)


@st.composite
def properties_for(draw: st.DrawFn, name: str) -> Any:
    """Draw the properties of event kind ``name``; ``_ABSENT`` where the model has a default."""
    if name == "session_start":
        return draw(st.sampled_from([_ABSENT, {}]))
    if name == "session_end":
        return {"duration_seconds": draw(non_negative())}
    if name == "book_opened":
        if draw(st.booleans()):
            return _ABSENT
        fields = {
            "format": draw(_optional(st.sampled_from(BOOK_FORMATS))),
            "resume_page": draw(_optional(counts())),
        }
        return _build(draw, fields)
    if name == "page_turned":
        page_count = draw(counts())
        fields = {
            "page_count": page_count,
            "page_number": draw(st.integers(1, page_count)),
            "direction": draw(_optional(st.sampled_from(DIRECTIONS))),
            "seconds_on_page": draw(_optional(non_negative())),
        }
        return _build(draw, fields)
    if name in ("audio_played", "audio_paused", "video_played", "video_paused"):
        fields = {
            "position_seconds": draw(non_negative()),
            "duration_seconds": draw(positive()),
            "playback_rate": draw(_optional(st.floats(*PLAYBACK_RATE) | st.sampled_from([1, 2]))),
        }
        if name.startswith("video"):
            fields["quality"] = draw(_optional(texts(QUALITY_MAX)))
        return _build(draw, fields)
    if name == "chapter_completed":
        chapter_count = draw(counts())
        fields = {
            "chapter_count": chapter_count,
            "chapter_index": draw(st.integers(1, chapter_count)),
        }
        return _build(draw, fields)
    if name == "purchase":
        fields = {
            "order_id": draw(ids()),
            "product_type": draw(st.sampled_from(PRODUCT_TYPES)),
            "amount": draw(amounts()).sent,
            "currency": draw(st.text(string.ascii_uppercase, min_size=3, max_size=3)),
            "plan": draw(_optional(texts(PLAN_MAX))),
        }
        return _build(draw, fields)
    raise ValueError(f"no properties strategy for event name {name!r}")


@st.composite
def valid_events(
    draw: st.DrawFn,
    names: st.SearchStrategy[str] | None = None,
    now: datetime | None = None,
    batch_sent_at: datetime | None = None,
) -> dict[str, Any]:
    """Draw one valid client event whose corrected time falls inside the collector's window.

    ``now`` is the expected server time (the moment of drawing by default). With
    ``batch_sent_at`` the event's times are relative to the batch's client clock, as the
    collector corrects them with the batch ``sent_at`` when the event has none.
    """
    name = draw(names if names is not None else st.sampled_from(EVENT_NAMES))
    model = EVENT_MODELS[name]
    moment = now if now is not None else datetime.now(UTC)
    age = draw(st.timedeltas(min_value=-MAX_LEAD, max_value=MAX_AGE))
    fields: dict[str, Any] = {
        "event_id": draw(event_ids()),
        "event_name": name,
        "sent_at": _ABSENT,
    }
    if draw(st.booleans()):
        skew = draw(st.timedeltas(min_value=-MAX_CLOCK_SKEW, max_value=MAX_CLOCK_SKEW))
        sent_at = moment + skew
        fields["sent_at"] = draw(timestamps_at(sent_at))
        fields["occurred_at"] = draw(timestamps_at(sent_at - age))
    elif batch_sent_at is not None:
        fields["occurred_at"] = draw(timestamps_at(batch_sent_at - age))
    else:
        # Without sent_at the event's own time is checked, so the age must stay positive
        # enough that a slow test run does not push it past 300 s in the future.
        fields["occurred_at"] = draw(timestamps_at(moment - abs(age)))

    identity = draw(st.sampled_from(["user", "anonymous", "both"]))
    fields["user_id"] = draw(ids()) if identity != "anonymous" else draw(_null_or_absent())
    fields["anonymous_id"] = draw(ids()) if identity != "user" else draw(_null_or_absent())
    if model.session_required:
        fields["session_id"] = draw(ids())
    else:
        fields["session_id"] = draw(_optional(ids()))
    if model.content_required:
        fields["content"] = draw(contents(model.content_types))
    else:
        fields["content"] = draw(_optional(contents(model.content_types)))
    fields["context"] = draw(_optional(contexts()))
    fields["properties"] = draw(properties_for(name))
    return _build(draw, fields)


def _null_or_absent() -> st.SearchStrategy[Any]:
    return st.sampled_from([_ABSENT, None])


# Request bodies -------------------------------------------------------------------------


@dataclass
class Body:
    """A request body before serialization, and its events in order."""

    document: Any
    events: list[dict[str, Any]]
    shape: str


@st.composite
def request_bodies(
    draw: st.DrawFn,
    max_events: int = 5,
    names: st.SearchStrategy[str] | None = None,
    batch_key: str | None = None,
) -> Body:
    """Draw a valid body: one event object, a JSON array, or a batch object.

    ``batch_key``, when given, may be put in the batch object's ``key`` field.
    """
    shape = draw(st.sampled_from(["single", "array", "batch"]))
    now = datetime.now(UTC)
    if shape == "single":
        event = draw(valid_events(names, now))
        return Body(event, [event], shape)
    count = draw(st.integers(1, max_events))
    if shape == "array":
        events = draw(st.lists(valid_events(names, now), min_size=count, max_size=count))
        return Body(events, events, shape)
    batch: dict[str, Any] = {}
    batch_sent_at = None
    if draw(st.booleans()):
        skew = draw(st.timedeltas(min_value=-MAX_CLOCK_SKEW, max_value=MAX_CLOCK_SKEW))
        batch_sent_at = now + skew
        batch["sent_at"] = draw(timestamps_at(batch_sent_at))
    if batch_key is not None and draw(st.booleans()):
        batch["key"] = batch_key
    events = draw(st.lists(valid_events(names, now, batch_sent_at), min_size=count, max_size=count))
    batch["events"] = events
    order = draw(st.permutations(sorted(batch)))
    return Body({key: batch[key] for key in order}, events, shape)


@st.composite
def encode_body(draw: st.DrawFn, document: Any, limit: int | None = None) -> bytes:
    """Serialize ``document`` as JSON in a drawn spelling: compact or indented, ASCII escapes
    or raw UTF-8, with optional surrounding whitespace.

    The standard library's encoder is used because orjson cannot write integers beyond
    64 bits, which amounts may be. When ``limit`` is given and the drawn spelling is larger,
    the compact UTF-8 spelling is returned instead.
    """
    indent = draw(st.sampled_from([None, None, 0, 2]))
    separators = (",", ":") if indent is None and draw(st.booleans()) else None
    text = json.dumps(
        document,
        ensure_ascii=draw(st.booleans()),
        indent=indent,
        separators=separators,
        allow_nan=False,
    )
    padding = st.text(" \t\r\n", max_size=80)
    raw = (draw(padding) + text + draw(padding)).encode()
    if limit is not None and len(raw) > limit:
        raw = compact_json(document)
    return raw


def compact_json(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# Broken events --------------------------------------------------------------------------


@dataclass
class BrokenEvent:
    """A valid event with one rule broken, the field its rejection names, and the rule."""

    event: dict[str, Any]
    field: str
    rule: str


def _no_uuid_text() -> st.SearchStrategy[str]:
    # No hexadecimal letter or digit, so no spelling can parse as a UUID.
    return st.text("ghijklmnopqrstuvwxyz-{}:", max_size=40)


def _near_miss_uuid() -> st.SearchStrategy[str]:
    return st.uuids().flatmap(
        lambda value: st.sampled_from(
            [str(value)[:-1], str(value) + "0", str(value)[:8] + "g" + str(value)[9:]]
        )
    )


def _naive_timestamps() -> st.SearchStrategy[str]:
    return st.datetimes(min_value=datetime(1, 1, 1)).map(lambda moment: moment.isoformat())


def _invalid_timestamps() -> st.SearchStrategy[str]:
    return st.one_of(
        _naive_timestamps(),
        st.sampled_from(
            [
                "2026-13-01T10:00:00Z",
                "2026-02-30T10:00:00Z",
                "2026-12-04T25:00:00Z",
                "2026-12-04T10:60:00Z",
                "2026-12-04T10:00:60Z",
                "2026-12-04T10:00:00+24:00",
                "2026-12-04",
                "20261204T100000Z",
                "yesterday",
                "",
            ]
        ),
    )


def _not_strings() -> st.SearchStrategy[Any]:
    """JSON values that are not strings and not null."""
    return st.one_of(st.integers(), st.floats(**_FINITE), st.booleans(), st.just([]), st.just({}))


def _not_numbers() -> st.SearchStrategy[Any]:
    """JSON values that strict number fields reject: strings, booleans, arrays, objects."""
    return st.one_of(
        st.text(max_size=10), st.integers(0, 9).map(str), st.booleans(), st.just([]), st.just({})
    )


def _not_integers() -> st.SearchStrategy[Any]:
    """Numbers with a fraction part (strict mode rejects even 3.0), and non-numbers."""
    return st.one_of(
        st.floats(min_value=1, max_value=1e15, **_FINITE), st.just(3.0), _not_numbers()
    )


def _unknown_keys(known: frozenset[str] | set[str]) -> st.SearchStrategy[str]:
    # Dots would make the error's dotted field path ambiguous, so names avoid them.
    return st.text(string.ascii_letters + "_-", min_size=1, max_size=20).filter(
        lambda name: name not in known
    )


_Mutation = Callable[[st.DrawFn, dict[str, Any], str], tuple[str, str] | None]
_MUTATIONS: list[_Mutation] = []


def _mutation(function: _Mutation) -> _Mutation:
    _MUTATIONS.append(function)
    return function


def _ensure_object(draw: st.DrawFn, event: dict[str, Any], key: str, name: str) -> dict:
    """Return ``event[key]`` as an object, filling in a valid one when it is absent or null."""
    value = event.get(key)
    if isinstance(value, dict):
        return value
    if key == "content":
        value = draw(contents(EVENT_MODELS[name].content_types))
    elif key == "context":
        value = draw(contexts())
    else:
        value = {}
    event[key] = value
    return value


@_mutation
def _bad_event_id(draw: st.DrawFn, event: dict[str, Any], name: str) -> tuple[str, str]:
    choice = draw(st.sampled_from(["text", "near", "type", "null", "missing"]))
    if choice == "missing":
        del event["event_id"]
    elif choice == "null":
        event["event_id"] = None
    elif choice == "type":
        event["event_id"] = draw(_not_strings())
    else:
        event["event_id"] = draw(_no_uuid_text() if choice == "text" else _near_miss_uuid())
    return "event_id", f"event_id {choice}"


@_mutation
def _bad_event_name(draw: st.DrawFn, event: dict[str, Any], name: str) -> tuple[str, str]:
    choice = draw(st.sampled_from(["unknown", "type", "missing"]))
    if choice == "missing":
        del event["event_name"]
    elif choice == "type":
        event["event_name"] = draw(_not_strings() | st.none())
    else:
        event["event_name"] = draw(
            st.text(max_size=30).filter(lambda text: text not in EVENT_NAMES)
        )
    return "event_name", f"event_name {choice}"


@_mutation
def _bad_occurred_at(draw: st.DrawFn, event: dict[str, Any], name: str) -> tuple[str, str]:
    choice = draw(st.sampled_from(["invalid", "type", "null", "missing"]))
    if choice == "missing":
        del event["occurred_at"]
    elif choice == "null":
        event["occurred_at"] = None
    elif choice == "type":
        event["occurred_at"] = draw(_not_strings())
    else:
        event["occurred_at"] = draw(_invalid_timestamps())
    return "occurred_at", f"occurred_at {choice}"


@_mutation
def _bad_sent_at(draw: st.DrawFn, event: dict[str, Any], name: str) -> tuple[str, str]:
    event["sent_at"] = draw(_invalid_timestamps() | _not_strings())
    return "sent_at", "sent_at invalid"


@_mutation
def _no_identity(draw: st.DrawFn, event: dict[str, Any], name: str) -> tuple[str, str]:
    for key in ("user_id", "anonymous_id"):
        if draw(st.booleans()):
            event.pop(key, None)
        else:
            event[key] = None
    return "user_id", "neither user_id nor anonymous_id"


@_mutation
def _bad_id(draw: st.DrawFn, event: dict[str, Any], name: str) -> tuple[str, str]:
    key = draw(st.sampled_from(["user_id", "anonymous_id", "session_id"]))
    choice = draw(st.sampled_from(["empty", "long", "type"]))
    if choice == "empty":
        event[key] = ""
    elif choice == "long":
        event[key] = draw(too_long(ID_MAX))
    else:
        event[key] = draw(_not_strings())
    return key, f"{key} {choice}"


@_mutation
def _no_session(draw: st.DrawFn, event: dict[str, Any], name: str) -> tuple[str, str] | None:
    if not EVENT_MODELS[name].session_required:
        return None
    if draw(st.booleans()):
        del event["session_id"]
    else:
        event["session_id"] = None
    return "session_id", "session_id missing"


@_mutation
def _no_content(draw: st.DrawFn, event: dict[str, Any], name: str) -> tuple[str, str] | None:
    if not EVENT_MODELS[name].content_required:
        return None
    if draw(st.booleans()):
        del event["content"]
    else:
        event["content"] = None
    return "content", "content missing"


@_mutation
def _wrong_content_type(
    draw: st.DrawFn, event: dict[str, Any], name: str
) -> tuple[str, str] | None:
    allowed = EVENT_MODELS[name].content_types
    if allowed is None:
        return None
    content = _ensure_object(draw, event, "content", name)
    content["content_type"] = draw(st.sampled_from(sorted(set(CONTENT_TYPES) - allowed)))
    return "content.content_type", "content_type not allowed for this event name"


@_mutation
def _bad_content(draw: st.DrawFn, event: dict[str, Any], name: str) -> tuple[str, str]:
    content = _ensure_object(draw, event, "content", name)
    key = draw(
        st.sampled_from(
            ["content_id", "content_type", "duration_seconds", "page_count", "unknown"]
            + sorted(CONTENT_TEXT_MAX)
        )
    )
    if key == "unknown":
        key = draw(_unknown_keys(set(content) | {"content_id", "content_type"}))
        content[key] = draw(st.integers() | st.text(max_size=5))
        return f"content.{key}", "unknown content field"
    if key == "content_id":
        content[key] = draw(st.sampled_from(["", None]) | too_long(ID_MAX) | _not_strings())
    elif key == "content_type":
        content[key] = draw(
            st.text(max_size=10).filter(lambda text: text not in CONTENT_TYPES) | st.none()
        )
    elif key == "duration_seconds":
        content[key] = draw(_NEGATIVE | _not_numbers())
    elif key == "page_count":
        content[key] = draw(st.sampled_from([0, -1, CONTENT_PAGE_COUNT_MAX + 1]) | _not_integers())
    else:
        content[key] = draw(too_long(CONTENT_TEXT_MAX[key]) | _not_strings())
    return f"content.{key}", f"content.{key} invalid"


@_mutation
def _bad_context(draw: st.DrawFn, event: dict[str, Any], name: str) -> tuple[str, str]:
    if draw(st.integers(0, 9)) == 0:
        event["context"] = draw(st.sampled_from([[], "web", 1, True]))
        return "context", "context not an object"
    context = _ensure_object(draw, event, "context", name)
    key = draw(st.sampled_from(["platform", "unknown", *sorted(CONTEXT_TEXT_MAX)]))
    if key == "unknown":
        key = draw(_unknown_keys(set(CONTEXT_TEXT_MAX) | {"platform"}))
        context[key] = draw(st.text(max_size=5))
        return f"context.{key}", "unknown context field"
    if key == "platform":
        context[key] = draw(
            st.text(max_size=10).filter(lambda text: text not in PLATFORMS) | _not_strings()
        )
    else:
        context[key] = draw(too_long(CONTEXT_TEXT_MAX[key]) | _not_strings())
    return f"context.{key}", f"context.{key} invalid"


@_mutation
def _unknown_envelope_field(draw: st.DrawFn, event: dict[str, Any], name: str) -> tuple[str, str]:
    key = draw(_unknown_keys(ENVELOPE_FIELDS))
    event[key] = draw(st.integers() | st.text(max_size=5) | st.none())
    return key, "unknown envelope field"


@_mutation
def _properties_not_object(draw: st.DrawFn, event: dict[str, Any], name: str) -> tuple[str, str]:
    event["properties"] = draw(st.sampled_from([[], [1], "x", 1, True, None]))
    return "properties", "properties not an object"


@_mutation
def _unknown_property(draw: st.DrawFn, event: dict[str, Any], name: str) -> tuple[str, str]:
    properties = _ensure_object(draw, event, "properties", name)
    known = set(EVENT_MODELS[name].model_fields["properties"].annotation.model_fields)
    key = draw(_unknown_keys(known))
    properties[key] = draw(st.integers() | st.text(max_size=5))
    return f"properties.{key}", "unknown property"


def _number_rule(
    draw: st.DrawFn,
    properties: dict[str, Any],
    key: str,
    bad_values: st.SearchStrategy[Any],
    required: bool,
) -> tuple[str, str]:
    choices = ["value", "value", "value"] + (["missing"] if required else [])
    if draw(st.sampled_from(choices)) == "missing":
        properties.pop(key, None)
        return f"properties.{key}", f"{key} missing"
    properties[key] = draw(bad_values)
    return f"properties.{key}", f"{key} invalid"


# The largest negative float, so that -0.0, which ``ge=0`` accepts, is never drawn.
_NEGATIVE = st.floats(max_value=-5e-324, **_FINITE) | st.integers(max_value=-1)
_BELOW_ONE = st.integers(max_value=0)


@_mutation
def _bad_property(draw: st.DrawFn, event: dict[str, Any], name: str) -> tuple[str, str] | None:
    """Break one rule of the event kind's own properties."""
    properties = _ensure_object(draw, event, "properties", name)
    if name == "session_end":
        return _number_rule(draw, properties, "duration_seconds", _NEGATIVE | _not_numbers(), True)
    if name == "book_opened":
        if draw(st.booleans()):
            properties["format"] = draw(
                st.text(max_size=8).filter(lambda text: text not in BOOK_FORMATS)
            )
            return "properties.format", "format unknown"
        return _number_rule(draw, properties, "resume_page", _BELOW_ONE | _not_integers(), False)
    if name == "page_turned":
        return _bad_page_turned(draw, properties)
    if name in ("audio_played", "audio_paused", "video_played", "video_paused"):
        return _bad_playback(draw, properties, name)
    if name == "chapter_completed":
        return _bad_chapter(draw, properties)
    if name == "purchase":
        return _bad_purchase(draw, properties)
    return None


def _bad_page_turned(draw: st.DrawFn, properties: dict[str, Any]) -> tuple[str, str]:
    rule = draw(st.sampled_from(["beyond", "number", "count", "direction", "seconds"]))
    if rule == "beyond":
        properties["page_number"] = properties["page_count"] + draw(st.integers(1, 1000))
        if properties["page_number"] > INT64_MAX:
            properties["page_count"] = INT64_MAX - 1000
            properties["page_number"] = INT64_MAX
        return "properties.page_number", "page_number > page_count"
    if rule == "number":
        return _number_rule(draw, properties, "page_number", _BELOW_ONE | _not_integers(), True)
    if rule == "count":
        # page_number 1 keeps the range rule satisfied, so only page_count is wrong.
        properties["page_number"] = 1
        return _number_rule(draw, properties, "page_count", _BELOW_ONE | _not_integers(), True)
    if rule == "direction":
        properties["direction"] = draw(
            st.text(max_size=10).filter(lambda text: text not in DIRECTIONS)
        )
        return "properties.direction", "direction unknown"
    properties["seconds_on_page"] = draw(_NEGATIVE | _not_numbers())
    return "properties.seconds_on_page", "seconds_on_page invalid"


def _bad_playback(draw: st.DrawFn, properties: dict[str, Any], name: str) -> tuple[str, str]:
    rules = ["position", "duration", "rate"] + (["quality"] if name.startswith("video") else [])
    rule = draw(st.sampled_from(rules))
    if rule == "position":
        return _number_rule(draw, properties, "position_seconds", _NEGATIVE | _not_numbers(), True)
    if rule == "duration":
        bad = _NEGATIVE | st.sampled_from([0, 0.0, -0.0]) | _not_numbers()
        return _number_rule(draw, properties, "duration_seconds", bad, True)
    if rule == "rate":
        low, high = PLAYBACK_RATE
        bad = st.one_of(
            st.floats(max_value=low, exclude_max=True, **_FINITE),
            st.floats(min_value=high, exclude_min=True, **_FINITE),
            _not_numbers(),
        )
        properties["playback_rate"] = draw(bad)
        return "properties.playback_rate", "playback_rate out of range"
    properties["quality"] = draw(too_long(QUALITY_MAX) | _not_strings())
    return "properties.quality", "quality invalid"


def _bad_chapter(draw: st.DrawFn, properties: dict[str, Any]) -> tuple[str, str]:
    rule = draw(st.sampled_from(["beyond", "index", "count"]))
    if rule == "beyond":
        properties["chapter_count"] = min(properties["chapter_count"], INT64_MAX - 1000)
        properties["chapter_index"] = properties["chapter_count"] + draw(st.integers(1, 1000))
        return "properties.chapter_index", "chapter_index > chapter_count"
    if rule == "index":
        return _number_rule(draw, properties, "chapter_index", _BELOW_ONE | _not_integers(), True)
    properties["chapter_index"] = 1
    return _number_rule(draw, properties, "chapter_count", _BELOW_ONE | _not_integers(), True)


def _bad_amounts() -> st.SearchStrategy[Any]:
    too_precise = st.integers(1, 10**6).map(lambda units: f"0.{units:010d}")
    too_large = st.integers(0, 9).map(lambda digit: f"{digit + 1}" + "0" * AMOUNT_WHOLE_DIGITS)
    return st.one_of(
        st.decimals(max_value=Decimal("-0.000000001"), places=9, **_FINITE).map(str),
        st.integers(max_value=-1),
        too_precise,
        too_large,
        st.sampled_from(["ten", "", "1,5", "0x10", "NaN", "Infinity", "1.2.3"]),
        st.booleans(),
        st.just([]),
        st.just(None),
    )


def _bad_purchase(draw: st.DrawFn, properties: dict[str, Any]) -> tuple[str, str]:
    rule = draw(st.sampled_from(["order_id", "product_type", "amount", "currency", "plan"]))
    if rule == "order_id":
        choice = draw(st.sampled_from(["missing", "empty", "long", "type"]))
        if choice == "missing":
            del properties["order_id"]
        else:
            properties["order_id"] = draw(
                {"empty": st.just(""), "long": too_long(ID_MAX), "type": _not_strings()}[choice]
            )
        return "properties.order_id", f"order_id {choice}"
    if rule == "product_type":
        properties["product_type"] = draw(
            st.text(max_size=12).filter(lambda text: text not in PRODUCT_TYPES) | st.none()
        )
        return "properties.product_type", "product_type unknown"
    if rule == "amount":
        if draw(st.integers(0, 5)) == 0:
            del properties["amount"]
        else:
            properties["amount"] = draw(_bad_amounts())
        return "properties.amount", "amount invalid"
    if rule == "currency":
        properties["currency"] = draw(
            st.one_of(
                st.text(string.ascii_lowercase, min_size=3, max_size=3),
                st.text(string.ascii_uppercase, max_size=2),
                st.text(string.ascii_uppercase, min_size=4, max_size=6),
                st.sampled_from(["EUR\n", " EUR", "EU1", "ÉUR"]),
                _not_strings(),
            )
        )
        return "properties.currency", "currency not three capital letters"
    properties["plan"] = draw(too_long(PLAN_MAX) | _not_strings())
    return "properties.plan", "plan invalid"


@st.composite
def broken_events(draw: st.DrawFn, names: st.SearchStrategy[str] | None = None) -> BrokenEvent:
    """Draw a valid event, then break one rule; the result names the field to expect."""
    event = draw(valid_events(names))
    name = event["event_name"]
    for _ in range(len(_MUTATIONS)):
        mutation = draw(st.sampled_from(_MUTATIONS))
        result = mutation(draw, event, name)
        if result is not None:
            field, rule = result
            return BrokenEvent(event, field, f"{name}: {rule}")
    # Every kind has mutations that always apply (event_id, for one), so this is unreachable
    # unless the table above loses them.
    raise AssertionError(f"no mutation applied to {name}")
