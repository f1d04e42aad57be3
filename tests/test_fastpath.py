"""The msgspec fast path against the pydantic models: same fields, never looser, same rows.

The models are the contract. The fast path may send a valid body to the models, which costs
time, but it must never accept an event that the models reject, and every event it accepts
must give the same row as the models' path.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from collector import fastpath, models
from collector.enrich import RequestContext, TimeRangeError, row_json
from collector.intake import ParsedBody, _parse_slow, parse_body
from tests.conftest import make_event
from tests.fuzz.strategies import (
    MAX_EVENT_BYTES,
    MAX_EVENTS,
    BrokenEvent,
    broken_events,
    encode_body,
    request_bodies,
    valid_events,
)

FAST_NAMES = st.sampled_from(sorted(fastpath.STRUCTS))
CHECKS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
WIDE = timedelta(days=4_000_000)
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def fast(body: bytes) -> ParsedBody | None:
    decoded = fastpath.decode(body, body.lstrip()[0])
    if decoded is None:
        return None
    events, sent_at, key = decoded
    return ParsedBody(list(enumerate(events)), [], sent_at, key, len(events))


def slow(body: bytes) -> ParsedBody:
    return _parse_slow(body, MAX_EVENTS, MAX_EVENT_BYTES)


def rows(parsed: ParsedBody, received_at: datetime, window: timedelta = WIDE) -> list[Any]:
    """Build the rows as the collect handler does: fast-path events in one loop first."""
    request = RequestContext(received_at, "key-1", "192.0.2.0", "Mozilla/5.0", False)
    fast_rows: list[bytes | None] = [None] * len(parsed.events)
    if parsed.events and isinstance(parsed.events[0][1], fastpath.Event):
        # The handler's window is at most 3,650 days; WIDE reaches past years 1-9999.
        earliest = max(received_at - min(window, received_at - EARLIEST), EARLIEST)
        latest = min(received_at + min(window, LATEST - received_at), LATEST)
        fast_rows = fastpath.encode_rows(
            parsed.events, parsed.batch_sent_at, received_at, earliest, latest, request.row_tail
        )
    result: list[Any] = []
    for (_, event), row in zip(parsed.events, fast_rows, strict=True):
        try:
            if row is None:
                row = row_json(event, parsed.batch_sent_at, request, window, window)
        except TimeRangeError as error:
            result.append(f"TimeRangeError: {error}")
        else:
            result.append(orjson.loads(row))
    return result


def assert_agrees(body: bytes) -> bool:
    """When the fast path accepts ``body``, the models accept it with the same rows.

    Returns whether the fast path accepted it.
    """
    accepted = fast(body)
    if accepted is None:
        return False
    checked = slow(body)
    assert not checked.rejected, f"the models reject what the fast path took: {checked.rejected}"
    assert checked.batch_key == accepted.batch_key
    received_at = datetime.now(UTC)
    assert rows(accepted, received_at) == rows(checked, received_at)
    return True


# Same fields -----------------------------------------------------------------------------


def _struct_fields(struct: type) -> dict[str, bool]:
    return {field.name: field.required for field in msgspec.structs.fields(struct)}


def _model_fields(model: type[BaseModel]) -> dict[str, bool]:
    return {name: field.is_required() for name, field in model.model_fields.items()}


def _nested(model: type[BaseModel], name: str) -> type[BaseModel]:
    annotation = model.model_fields[name].annotation
    for option in getattr(annotation, "__args__", (annotation,)):
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    raise AssertionError(f"{model.__name__}.{name} is not a model")


def _struct_of(struct: type, name: str) -> type:
    field = next(field for field in msgspec.structs.fields(struct) if field.name == name)
    for option in getattr(field.type, "__args__", (field.type,)):
        if isinstance(option, type) and issubclass(option, msgspec.Struct):
            return option
    raise AssertionError(f"{struct.__name__}.{name} is not a struct")


@pytest.mark.parametrize("name", sorted(fastpath.STRUCTS))
def test_struct_has_the_models_fields(name: str) -> None:
    model = models.EVENT_MODELS[name]
    struct = fastpath.STRUCTS[name]
    expected = _model_fields(model)
    # The tag is not a struct field: msgspec reads event_name to choose the struct.
    assert expected.pop("event_name") is True
    assert _struct_fields(struct) == expected
    for part in ("content", "context", "properties"):
        assert _struct_fields(_struct_of(struct, part)) == _model_fields(_nested(model, part))
    for trait in ("content_types", "content_required", "session_required"):
        assert getattr(struct, trait) == getattr(model, trait)
    assert struct.event_name == name


def test_every_kind_but_purchase_has_a_struct() -> None:
    assert set(fastpath.STRUCTS) == set(models.EVENT_NAMES) - {"purchase"}


# Generated bodies ------------------------------------------------------------------------


@CHECKS
@given(data=st.data())
def test_valid_bodies_match_model_rows(data: st.DataObject) -> None:
    body = data.draw(request_bodies(max_events=5, names=FAST_NAMES, batch_key="pk_test"))
    raw = data.draw(encode_body(body.document))
    # The models also read UUIDs in braces or as URNs, and times to 9 decimal places. Bodies
    # with a backslash go to the models too.
    other_ids = any(event["event_id"][0] in "{u" for event in body.events)
    long_fraction = re.search(rb"\.[0-9]{7,}[Zz+-]", raw) is not None
    escaped = b"\\" in raw
    assert assert_agrees(raw) is not (other_ids or long_fraction or escaped), raw


@CHECKS
@given(data=st.data())
def test_broken_events_never_pass_the_fast_path(data: st.DataObject) -> None:
    broken: BrokenEvent = data.draw(broken_events())
    neighbours = data.draw(st.lists(valid_events(FAST_NAMES), max_size=2))
    items = [*neighbours, broken.event]
    document: Any = items if len(items) > 1 or data.draw(st.booleans()) else broken.event
    raw = data.draw(encode_body(document))
    assert fast(raw) is None, broken.rule


def test_purchases_are_left_to_the_models() -> None:
    body = orjson.dumps([make_event("page_turned"), make_event("purchase")])
    assert fast(body) is None
    parsed = parse_body(body, MAX_EVENTS, MAX_EVENT_BYTES)
    assert [type(event) for _, event in parsed.events] == [models.PageTurned, models.Purchase]


# Spellings at the edges ------------------------------------------------------------------


def _with(path: tuple[str, ...], value: Any, name: str = "page_turned") -> bytes:
    event = make_event(name)
    target = event
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return json.dumps(event, ensure_ascii=False).encode()


EDGE_TIMES = [
    "2026-12-04T10:00:00Z",
    "2026-12-04t10:00:00z",
    "2026-12-04 10:00:00Z",
    "2026-12-04T10:00:00+00:00",
    "2026-12-04T10:00:00-00:00",
    "2026-12-04T10:00:00+0200",
    "2026-12-04T10:00:00.123456+05:30",
    "2026-12-04T10:00:00.1234567Z",
    "2026-12-04T23:59:59.9999995Z",
    "2026-12-04T10:00:00.123456789-01:00",
    "2026-12-04T10:00Z",
    "2026-12-04T10:00:00,5Z",
    "2026-12-04T10:00:60Z",
    "2026-12-04T24:00:00Z",
    "2026-02-30T10:00:00Z",
    "2026-12-04T10:00:00+24:00",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
    "2026-12-04T10:00:00",
    "1733300000",
]


@pytest.mark.parametrize("spelling", EDGE_TIMES)
def test_time_spellings_agree(spelling: str) -> None:
    assert_agrees(_with(("occurred_at",), spelling))
    assert_agrees(_with(("sent_at",), spelling))


def test_fractions_beyond_microseconds_go_to_the_models() -> None:
    # msgspec would round .9999995 up to the next second; the models cut it off.
    body = _with(("occurred_at",), "2026-12-04T23:59:59.9999995Z")
    assert fast(body) is None
    (row,) = rows(slow(body), datetime(2026, 12, 4, 23, 59, tzinfo=UTC))
    assert row["occurred_at"] == "2026-12-04T23:59:59.999999Z"


EDGE_IDS = [
    "A1B2C3D4-0000-4000-8000-000000000001",
    "a1b2c3d400004000800000000000000f",
    "{a1b2c3d4-0000-4000-8000-000000000001}",
    "urn:uuid:a1b2c3d4-0000-4000-8000-000000000001",
    "00000000-0000-0000-0000-000000000000",
    "00000000000000000000000000000000",
    "a1b2c3d4-0000-4000-8000-00000000000",
]


@pytest.mark.parametrize("spelling", EDGE_IDS)
def test_event_id_spellings_agree(spelling: str) -> None:
    assert_agrees(_with(("event_id",), spelling))


@pytest.mark.parametrize(
    "text",
    [
        '"seconds_on_page":-0.0',
        '"seconds_on_page":1e308',
        '"seconds_on_page":1e999',
        '"seconds_on_page":-1e-320',
        '"seconds_on_page":123456789012345678901234567890',
        '"seconds_on_page":true',
        '"seconds_on_page":"1"',
        '"seconds_on_page":null',
        '"direction":null',
        '"page_count":10000001',
        '"page_count":1.0',
        '"page_count":2,"page_count":1',
        '"unknown":1',
    ],
)
def test_property_spellings_agree(text: str) -> None:
    body = _with(("properties",), {"page_number": 1, "page_count": 2}).decode()
    assert_agrees(body.replace('"page_count": 2', text + ',"page_count": 2', 1).encode())


@pytest.mark.parametrize(
    "replace",
    [
        ('"session_id": "', '"session_id": "\\ud800'),
        ('"session_id": "', '"session_id": "\\ud83d\\ude00'),
        ('"session_id": "', '"session_id": "\\u0000'),
        ('"session_id": "', '"session_id": "first", "session_id": "'),
        ('"event_name": "', '"event_name": "session_start", "event_name": "'),
        ('"anonymous_id": "anon-1"', '"anonymous_id": null'),
        ('"content": {', '"content": null, "content": {'),
    ],
)
def test_envelope_spellings_agree(replace: tuple[str, str]) -> None:
    body = json.dumps(make_event("page_turned")).replace(*replace, 1)
    assert_agrees(body.encode())


@pytest.mark.parametrize("length", [128, 129])
def test_text_limits_count_characters(length: int) -> None:
    body = _with(("session_id",), "\U0001f600" * length)
    assert assert_agrees(body) is (length == 128)


@pytest.mark.parametrize(
    "body",
    [
        b'{"sent_at": null, "events": [EVENT]}',
        b'{"events": [], "events": [EVENT]}',
        b'{"key": "pk_x", "events": [EVENT], "sent_at": "2026-12-04T10:00:00+01:00"}',
        b'{"extra": 1, "events": [EVENT]}',
        b'{"events": []}',
        b"[]",
        b"[EVENT, EVENT] ",
        b"\xef\xbb\xbf[EVENT]",
        b"[EVENT] x",
    ],
)
def test_body_shapes_agree(body: bytes) -> None:
    raw = body.replace(b"EVENT", orjson.dumps(make_event("session_start")))
    decoded = fastpath.decode(raw, raw.lstrip()[0])
    if decoded is not None and decoded[0]:
        assert_agrees(raw)


def test_rejection_payload_is_the_event() -> None:
    event = make_event("page_turned")
    parsed = fast(orjson.dumps(event))
    assert parsed is not None
    payload = orjson.loads(fastpath.payload(parsed.events[0][1]))
    assert payload["event_id"] == event["event_id"]
    assert payload["properties"] == event["properties"]


@pytest.mark.parametrize("minutes", [-10, -4, 0, 4, 10])
def test_time_window_edges_agree(minutes: int) -> None:
    received_at = datetime.now(UTC)
    occurred_at = received_at + timedelta(minutes=minutes)
    body = _with(("occurred_at",), occurred_at.isoformat())
    accepted = fast(body)
    assert accepted is not None
    window = timedelta(minutes=5)
    expected = rows(slow(body), received_at, window)
    assert rows(accepted, received_at, window) == expected
    assert isinstance(expected[0], str) is (abs(minutes) > 5)


@pytest.mark.parametrize(
    "spelling",
    [
        "2026-12-04T10:00:00.999999\\u0035Z",
        "2026-12-04T10:00:00\\u002e9999995Z",
        "2026-12-04T10:00\\u003a00.9999995Z",
    ],
)
def test_escaped_long_fractions_go_to_the_models(spelling: str) -> None:
    event = json.dumps(make_event("session_start", occurred_at="TIME"))
    body = event.replace("TIME", spelling).encode()
    assert fast(body) is None
    (row,) = rows(slow(body), datetime(2026, 12, 4, 10, 1, tzinfo=UTC))
    assert row["occurred_at"] == "2026-12-04T10:00:00.999999Z"


@pytest.mark.parametrize("shape", ["single", "array", "batch"])
def test_deep_nesting_uses_models(shape: str) -> None:
    deep = b'{"a":' + b"[" * 1000 + b"]" * 1000 + b"}"
    body = {"single": deep, "array": b"[" + deep + b"]", "batch": b'{"events":[' + deep + b"]}"}
    raw = body[shape]
    assert fast(raw) is None
    parsed = parse_body(raw, MAX_EVENTS, 1 << 20)
    assert parsed.events == []
    assert [item.index for item in parsed.rejected] == [0]
