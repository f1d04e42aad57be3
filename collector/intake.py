"""Turn a request body into validated events and per-event rejections.

The hot path decodes the whole body with the msgspec structs of ``collector.fastpath``. A
body they reject is validated with one pydantic ``validate_json`` call against the models,
and only when that fails does the slow path parse the body with orjson and validate each
event on its own, so that valid events are still accepted and every rejection names its
field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any

import orjson
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from collector import fastpath
from collector.models import EVENT_ADAPTER, EVENT_MODELS, EVENT_NAMES, Event, Timestamp

# Maximum characters of client input that an error message repeats.
MAX_ECHO = 64
# Errors reported for one event; an event with more is reported by its first ones.
MAX_ERRORS = 10


class BodyError(Exception):
    """The body as a whole is unusable; ``status`` is the HTTP status to return."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Batch(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    sent_at: Timestamp | None = None
    key: Annotated[str, Field(max_length=256)] | None = None
    events: list[Event]


_LIST_ADAPTER: TypeAdapter[list[Event]] = TypeAdapter(list[Event])
_BATCH_ADAPTER: TypeAdapter[_Batch] = TypeAdapter(_Batch)


@dataclass(slots=True)
class Rejection:
    """One rejected event: its position in the request and its field errors."""

    index: int
    event_id: str | None
    errors: list[dict[str, str]]
    # The rejected event's JSON, kept only for the dead-letter topic.
    payload: bytes | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "event_id": self.event_id, "errors": self.errors}


@dataclass(slots=True)
class ParsedBody:
    """Valid events with their request positions, rejections, and the batch's own fields."""

    events: list[tuple[int, Any]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    batch_sent_at: Any = None
    batch_key: str | None = None
    count: int = 0


def parse_body(body: bytes, max_events: int, max_event_bytes: int) -> ParsedBody:
    """Validate ``body`` as one event, a JSON array of events or a batch object.

    Raises BodyError for a body that is not JSON, has the wrong shape, has no events or has
    too many. Field errors of single events are returned as rejections, not raised.
    """
    start = _first_byte(body)
    if len(body) <= max_event_bytes and start in (0x5B, 0x7B):  # "[" or "{"
        fast = fastpath.decode(body, start)
        if fast is not None:
            decoded, sent_at, key = fast
            if not decoded:
                raise BodyError(400, "the request contains no events")
            if len(decoded) > max_events:
                raise _too_many(len(decoded), max_events)
            return ParsedBody(
                events=list(enumerate(decoded)),
                batch_sent_at=sent_at,
                batch_key=key,
                count=len(decoded),
            )
    large = len(body) > max_event_bytes
    if large and start == 0x7B and b'"events"' not in body:
        raise BodyError(413, f"the event is larger than {max_event_bytes} bytes")
    if b'"amount"' in body:
        body = exact_amounts(body)
    if large:
        # A large array or batch takes the slow path, which measures every event.
        return _parse_slow(body, max_events, max_event_bytes)
    if start == 0x5B:  # "["
        try:
            events = _LIST_ADAPTER.validate_json(body)
        except ValidationError:
            return _parse_slow(body, max_events, max_event_bytes)
        if not events:
            raise BodyError(400, "the request contains no events")
        if len(events) > max_events:
            raise _too_many(len(events), max_events)
        return ParsedBody(events=list(enumerate(events)), count=len(events))
    if start == 0x7B:  # "{"
        try:
            if b'"events"' in body:
                batch = _BATCH_ADAPTER.validate_json(body)
            else:
                event = EVENT_ADAPTER.validate_json(body)
                return ParsedBody(events=[(0, event)], count=1)
        except ValidationError:
            return _parse_slow(body, max_events, max_event_bytes)
        if not batch.events:
            raise BodyError(400, "the batch contains no events")
        if len(batch.events) > max_events:
            raise _too_many(len(batch.events), max_events)
        return ParsedBody(
            events=list(enumerate(batch.events)),
            batch_sent_at=batch.sent_at,
            batch_key=batch.key,
            count=len(batch.events),
        )
    return _parse_slow(body, max_events, max_event_bytes)


# An "amount" member whose value is a JSON number. Inside a JSON string a quote is escaped,
# so a quoted word followed by a colon is always a key.
# The number must be valid JSON (no leading zeros) and end where the pattern ends. A number
# with an exponent of more than 4 digits is left to the parsers as it is.
_AMOUNT_NUMBER = re.compile(
    rb'("amount"\s*:\s*)(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,4})?)(?![0-9.eE+-])'
)
# Largest power of ten, either way, of an amount that is turned into a decimal string. NUMERIC
# holds 29 integer and 9 fractional digits, so anything further out is rejected either way.
MAX_AMOUNT_SCALE = 40
# Significant digits that every JSON number keeps when read as a 64-bit float.
FLOAT_EXACT_DIGITS = 15


def exact_amounts(body: bytes) -> bytes:
    """Turn ``amount`` numbers with more than 15 significant digits into decimal strings.

    pydantic reads a JSON number with a fraction as a 64-bit float, so 9999999999.999999999
    would be stored as 10000000000. orjson does the same with integers beyond 64 bits, which
    matters when the slow path cannot reparse a body nested past 200 levels. The same value
    as a decimal string is read exactly.

    NOTE: a key spelled with escapes, such as "\\u0061mount", is not recognised, so its long
    number still goes through a float.
    """
    return _AMOUNT_NUMBER.sub(_amount_text, body)


def _amount_text(match: re.Match[bytes]) -> bytes:
    number = match.group(2)
    mantissa = number.lower().partition(b"e")[0]
    digits = mantissa.lstrip(b"-").replace(b".", b"").lstrip(b"0")
    if len(digits) <= FLOAT_EXACT_DIGITS:
        return match.group(0)
    value = Decimal(number.decode("ascii"))
    if abs(value.adjusted()) > MAX_AMOUNT_SCALE:
        # Far outside NUMERIC, which the models reject, and a long text to write out.
        return match.group(0)
    return match.group(1) + b'"' + format(value, "f").encode("ascii") + b'"'


def _first_byte(body: bytes) -> int:
    for byte in body[:64]:
        if byte not in b" \t\r\n":
            return byte
    return -1


def _too_many(count: int, limit: int) -> BodyError:
    return BodyError(413, f"the request contains {count} events; the maximum is {limit}")


def _parse_slow(body: bytes, max_events: int, max_event_bytes: int) -> ParsedBody:
    if not body.strip():
        raise BodyError(400, "the request body is empty")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, f"the body is not valid JSON: {exc}") from None
    if isinstance(document, (list, dict)):
        # orjson reads integers beyond 64 bits as floats, which would change an amount, so the
        # values are read again with pydantic's parser, which keeps them exact. orjson has
        # already rejected NaN, infinities, lone surrogates and invalid UTF-8.
        try:
            document = pydantic_core.from_json(body)
        except ValueError:
            # Nested deeper than from_json's 200 levels, which no valid event is. Integers
            # beyond 64 bits stay floats then; amounts were made exact by exact_amounts.
            pass

    parsed = ParsedBody()
    if isinstance(document, list):
        items = document
    elif isinstance(document, dict) and "events" in document:
        items = document["events"]
        if not isinstance(items, list):
            raise BodyError(400, "events: must be a JSON array of event objects")
        _check_batch_fields(document, parsed)
    elif isinstance(document, dict):
        items = [document]
    else:
        kind = type(document).__name__ if document is not None else "null"
        raise BodyError(
            400, f"the body must be an event object, an array of events or a batch, not {kind}"
        )
    if not items:
        raise BodyError(400, "the request contains no events")
    if len(items) > max_events:
        raise _too_many(len(items), max_events)
    parsed.count = len(items)

    for index, item in enumerate(items):
        event_id = _event_id_of(item)
        if not isinstance(item, dict):
            message = "an event must be a JSON object"
            parsed.rejected.append(
                Rejection(index, None, [{"field": "", "message": message}], _dump(item))
            )
            continue
        try:
            raw = _dump_item(item)
        except (TypeError, ValueError, orjson.JSONEncodeError):
            # orjson reads 1024 levels of nesting but writes at most 255.
            message = "the event is nested too deeply"
            parsed.rejected.append(Rejection(index, event_id, [{"field": "", "message": message}]))
            continue
        if len(raw) > max_event_bytes:
            message = f"the event is {len(raw)} bytes; the maximum is {max_event_bytes}"
            parsed.rejected.append(
                Rejection(index, event_id, [{"field": "", "message": message}], raw[:4096])
            )
            continue
        try:
            parsed.events.append((index, EVENT_ADAPTER.validate_json(raw)))
        except ValidationError as exc:
            parsed.rejected.append(Rejection(index, event_id, format_errors(exc), raw))
    return parsed


def _dump_item(item: object) -> bytes:
    try:
        return orjson.dumps(item)
    except orjson.JSONEncodeError:
        # Integers beyond 64 bits, which orjson cannot write; pydantic can.
        return pydantic_core.to_json(item)


def _dump(item: object) -> bytes | None:
    try:
        return _dump_item(item)
    except (TypeError, ValueError, orjson.JSONEncodeError):
        return None


def _check_batch_fields(document: dict[str, Any], parsed: ParsedBody) -> None:
    unknown = sorted(set(document) - {"sent_at", "key", "events"})
    if unknown:
        raise BodyError(400, "unknown batch field: a batch object has only sent_at, key and events")
    fields = _dump({**document, "events": []})
    if fields is None:
        raise BodyError(400, "the batch fields are nested too deeply")
    try:
        batch = _BATCH_ADAPTER.validate_json(fields)
    except ValidationError as exc:
        first = format_errors(exc)[0]
        raise BodyError(400, f"{first['field']}: {first['message']}") from None
    parsed.batch_sent_at = batch.sent_at
    parsed.batch_key = batch.key


def _event_id_of(item: object) -> str | None:
    if isinstance(item, dict):
        value = item.get("event_id")
        if isinstance(value, str):
            return _echo(value)
    return None


def _echo(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 3] + "..."


def format_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Turn pydantic errors into ``{"field": "dotted.path", "message": ...}`` entries.

    The discriminator tag that pydantic puts first in each location is dropped, and
    messages never include the input value, so secrets and payloads are not echoed.
    """
    result = []
    for error in exc.errors(include_url=False, include_input=False)[:MAX_ERRORS]:
        # Unknown keys are client input: each part is cut to MAX_ECHO characters.
        location = [_echo(str(part)) for part in error["loc"]]
        if location and location[0] in EVENT_MODELS:
            location = location[1:]
        context = error.get("ctx") or {}
        extra_field = context.get("field")
        if isinstance(extra_field, str):
            location.append(extra_field)
        message = error["msg"]
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            location = ["event_name"]
            message = "event_name must be one of: " + ", ".join(EVENT_NAMES)
        elif error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "field required"
        result.append({"field": ".".join(location), "message": message})
    return result
