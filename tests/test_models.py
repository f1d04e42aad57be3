"""Event model rules, checked through the same body parser the endpoint uses."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from collector.intake import BodyError, parse_body
from collector.models import EVENT_NAMES
from tests.conftest import EXAMPLES, make_event


def parse(body: Any) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_body(raw, max_events=500, max_event_bytes=32 * 1024)


def rejected_fields(event: dict[str, Any]) -> list[str]:
    result = parse(event)
    assert result.events == [], f"event was accepted: {event}"
    return [error["field"] for error in result.rejected[0].errors]


def test_every_event_name_has_example() -> None:
    assert set(EXAMPLES) == set(EVENT_NAMES)


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_valid_event_accepted(name: str) -> None:
    result = parse(make_event(name))
    assert result.rejected == []
    assert [event.event_name for _, event in result.events] == [name]


def without(event: dict[str, Any], *path: str) -> dict[str, Any]:
    target = event
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return event


def with_value(event: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    target = event
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return event


INVALID_CASES = [
    ("event_id not a uuid", with_value(make_event(), "abc", "event_id"), "event_id"),
    ("event_id missing", without(make_event(), "event_id"), "event_id"),
    ("unknown event name", with_value(make_event(), "page_flip", "event_name"), "event_name"),
    ("event name missing", without(make_event(), "event_name"), "event_name"),
    (
        "timestamp without offset",
        with_value(make_event(), "2026-12-04T10:00:00", "occurred_at"),
        "occurred_at",
    ),
    ("timestamp as number", with_value(make_event(), 1764842400, "occurred_at"), "occurred_at"),
    ("timestamp garbage", with_value(make_event(), "yesterday", "occurred_at"), "occurred_at"),
    (
        "no identity",
        with_value(with_value(make_event(), None, "anonymous_id"), None, "user_id"),
        "user_id",
    ),
    ("user_id too long", with_value(make_event(), "u" * 129, "user_id"), "user_id"),
    ("user_id empty", with_value(make_event(), "", "user_id"), "user_id"),
    ("session missing", without(make_event(), "session_id"), "session_id"),
    ("content missing", without(make_event(), "content"), "content"),
    (
        "wrong content type",
        with_value(make_event(), "audio", "content", "content_type"),
        "content.content_type",
    ),
    (
        "unknown content type",
        with_value(make_event(), "podcast", "content", "content_type"),
        "content.content_type",
    ),
    (
        "page beyond count",
        with_value(make_event(), 601, "properties", "page_number"),
        "properties.page_number",
    ),
    (
        "page zero",
        with_value(make_event(), 0, "properties", "page_number"),
        "properties.page_number",
    ),
    (
        "page as string",
        with_value(make_event(), "3", "properties", "page_number"),
        "properties.page_number",
    ),
    (
        "page as float",
        with_value(make_event(), 3.5, "properties", "page_number"),
        "properties.page_number",
    ),
    (
        "unknown property",
        with_value(make_event(), 1, "properties", "colour"),
        "properties.colour",
    ),
    (
        "bad direction",
        with_value(make_event(), "sideways", "properties", "direction"),
        "properties.direction",
    ),
    (
        "negative position",
        with_value(make_event("audio_paused"), -1, "properties", "position_seconds"),
        "properties.position_seconds",
    ),
    (
        "zero duration",
        with_value(make_event("audio_played"), 0, "properties", "duration_seconds"),
        "properties.duration_seconds",
    ),
    (
        "playback rate too high",
        with_value(make_event("video_played"), 4.5, "properties", "playback_rate"),
        "properties.playback_rate",
    ),
    (
        "playback rate too low",
        with_value(make_event("audio_played"), 0.2, "properties", "playback_rate"),
        "properties.playback_rate",
    ),
    (
        "chapter beyond count",
        with_value(make_event("chapter_completed"), 13, "properties", "chapter_index"),
        "properties.chapter_index",
    ),
    (
        "chapter on video",
        with_value(make_event("chapter_completed"), "video", "content", "content_type"),
        "content.content_type",
    ),
    (
        "negative amount",
        with_value(make_event("purchase"), "-1", "properties", "amount"),
        "properties.amount",
    ),
    (
        "amount not a number",
        with_value(make_event("purchase"), "ten", "properties", "amount"),
        "properties.amount",
    ),
    (
        "lower-case currency",
        with_value(make_event("purchase"), "eur", "properties", "currency"),
        "properties.currency",
    ),
    (
        "product type unknown",
        with_value(make_event("purchase"), "magazine", "properties", "product_type"),
        "properties.product_type",
    ),
    (
        "order id missing",
        without(make_event("purchase"), "properties", "order_id"),
        "properties.order_id",
    ),
    (
        "session_end without duration",
        without(make_event("session_end"), "properties", "duration_seconds"),
        "properties.duration_seconds",
    ),
    (
        "session_start with property",
        with_value(make_event("session_start"), 1, "properties", "x"),
        "properties.x",
    ),
    (
        "unknown platform",
        with_value(make_event(), "tv", "context", "platform"),
        "context.platform",
    ),
    ("unknown envelope field", with_value(make_event(), "x", "received_at"), "received_at"),
    ("properties not object", with_value(make_event(), [1], "properties"), "properties"),
]


@pytest.mark.parametrize(
    ("event", "field"),
    [(event, field) for _, event, field in INVALID_CASES],
    ids=[case for case, _, _ in INVALID_CASES],
)
def test_invalid_event_names_field(event: dict[str, Any], field: str) -> None:
    assert field in rejected_fields(event)


def test_purchase_needs_no_session() -> None:
    event = without(make_event("purchase"), "session_id")
    assert parse(event).rejected == []


def test_amount_accepts_number_and_string() -> None:
    for amount in (12.5, "12.50", 0, "1234567.123456789"):
        event = with_value(make_event("purchase"), amount, "properties", "amount")
        assert parse(event).rejected == [], amount


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_number_is_bad_json(token: bytes) -> None:
    raw = orjson.dumps(make_event("purchase")).replace(b'"9.99"', token)
    with pytest.raises(BodyError) as caught:
        parse(raw)
    assert caught.value.status == 400


def test_mixed_batch_keeps_valid_events() -> None:
    good = make_event()
    bad = with_value(make_event(), 0, "properties", "page_number")
    result = parse({"sent_at": "2026-12-04T10:00:00Z", "events": [good, bad, good]})
    assert [index for index, _ in result.events] == [0, 2]
    assert [item.index for item in result.rejected] == [1]
    assert result.rejected[0].event_id == bad["event_id"]


def test_error_messages_do_not_echo_input() -> None:
    secret = "s3cr3t-value-" + "x" * 200
    result = parse(with_value(make_event(), secret, "properties", "direction"))
    text = orjson.dumps([item.as_dict() for item in result.rejected]).decode()
    assert "s3cr3t" not in text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b"   ", 400),
        (b"null", 400),
        (b'"just a string"', 400),
        (b"42", 400),
        (b"[]", 400),
        (b'{"events": []}', 400),
        (b'{"events": {}}', 400),
        (b"{not json", 400),
        (b"\xff\xfe\x00", 400),
        (b'{"event_name": "x", "user_id": "\\ud800"}', 400),
        (b"[" * 5000 + b"]" * 5000, 400),
        (b'{"events": [], "colour": 1}', 400),
    ],
)
def test_bad_body_raises(body: bytes, status: int) -> None:
    with pytest.raises(BodyError) as caught:
        parse(body)
    assert caught.value.status == status


def test_too_many_events() -> None:
    events = [make_event() for _ in range(3)]
    with pytest.raises(BodyError) as caught:
        parse_body(orjson.dumps(events), max_events=2, max_event_bytes=32 * 1024)
    assert caught.value.status == 413


def test_oversized_single_event() -> None:
    event = make_event()
    event["content"]["title"] = "t" * 40_000
    with pytest.raises(BodyError) as caught:
        parse(event)
    assert caught.value.status == 413


def test_oversized_event_in_batch_rejected_alone() -> None:
    big = make_event()
    big["properties"]["padding"] = "p" * 40_000
    result = parse([make_event(), big])
    assert len(result.events) == 1
    assert result.rejected[0].index == 1
    assert "bytes" in result.rejected[0].errors[0]["message"]


def test_non_object_items_rejected() -> None:
    result = parse([make_event(), 5, "x", None])
    assert len(result.events) == 1
    assert [item.index for item in result.rejected] == [1, 2, 3]


def test_deeply_nested_event_rejected() -> None:
    body = (
        b'[{"properties": ' + b"[" * 300 + b"]" * 300 + b"}, " + orjson.dumps(make_event()) + b"]"
    )
    result = parse_body(body, max_events=500, max_event_bytes=1 << 20)
    assert [index for index, _ in result.events] == [1]
    assert result.rejected[0].errors[0]["message"] == "the event is nested too deeply"


def test_clock_overflow_is_rejection_not_crash() -> None:
    from datetime import UTC, datetime, timedelta

    from collector.enrich import RequestContext, TimeRangeError, row_json

    event = make_event(occurred_at="0001-01-01T00:00:00Z", sent_at="9999-12-31T00:00:00Z")
    parsed = parse(event)
    request = RequestContext(datetime.now(UTC), "k", None, None, False)
    with pytest.raises(TimeRangeError):
        row_json(parsed.events[0][1], None, request, timedelta(minutes=5), timedelta(days=30))


@pytest.mark.parametrize("amount", [" 1 ", "1_000", "\u0661\u0662", "1e5", "-0", ""])
def test_amount_text_must_be_plain_decimal(amount: str) -> None:
    event = with_value(make_event("purchase"), amount, "properties", "amount")
    assert "properties.amount" in rejected_fields(event)


def test_nil_event_id_rejected() -> None:
    event = make_event(event_id="00000000-0000-0000-0000-000000000000")
    assert "event_id" in rejected_fields(event)


@pytest.mark.parametrize("value", [2**63, 10**19, 10_000_001])
def test_page_number_bounded(value: int) -> None:
    event = with_value(make_event(), value, "properties", "page_number")
    event["properties"]["page_count"] = value
    assert "properties.page_number" in rejected_fields(event)


def test_unknown_field_name_echo_is_cut() -> None:
    event = with_value(make_event(), 1, "properties", "k" * 20_000)
    fields = rejected_fields(event)
    assert all(len(field) < 100 for field in fields)


@pytest.mark.parametrize(
    "amount",
    [
        "9999999999.999999999",
        "12345678.123456789",
        "99999999999999999999999999999.999999999",
        "12345678901234567890123456789",
        "1234567.123456789",
        "12.5",
        "1E+2",
    ],
)
def test_number_amounts_are_stored_exactly(amount: str) -> None:
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from collector.enrich import RequestContext, row_json

    body = orjson.dumps(make_event("purchase")).replace(
        b'"amount":"9.99"', b'"amount":' + amount.encode()
    )
    assert amount.encode() in body
    parsed = parse_body(body, max_events=500, max_event_bytes=32 * 1024)
    assert parsed.rejected == []
    request = RequestContext(datetime.now(UTC), "k", None, None, False)
    row = orjson.loads(
        row_json(parsed.events[0][1], None, request, timedelta(minutes=5), timedelta(days=30))
    )
    assert Decimal(row["properties"]["amount"]) == Decimal(amount)


def test_big_amount_next_to_deep_nesting_stays_exact() -> None:
    from decimal import Decimal

    purchase = orjson.dumps(make_event("purchase")).replace(
        b'"amount":"9.99"', b'"amount":12345678901234567890123456789'
    )
    deep = orjson.dumps(make_event("page_turned"))[:-1] + b',"zz":' + b"[" * 300 + b"]" * 300 + b"}"
    parsed = parse_body(
        b"[" + purchase + b"," + deep + b"]", max_events=500, max_event_bytes=1 << 20
    )
    assert [index for index, _ in parsed.events] == [0]
    amount = parsed.events[0][1].properties.amount
    assert amount == Decimal("12345678901234567890123456789")


def test_exact_amounts_leaves_short_numbers_and_strings() -> None:
    from collector.intake import exact_amounts

    body = b'{"amount": 12.5, "x": "\\"amount\\": 1234567890123456789", "amount":1e999}'
    assert exact_amounts(body) == body
    assert exact_amounts(b'{"amount" : 1234567890.1234567}') == b'{"amount" : "1234567890.1234567"}'


def _purchase_with(amount: bytes) -> bytes:
    return orjson.dumps(make_event("purchase")).replace(b'"amount":"9.99"', b'"amount":' + amount)


@pytest.mark.parametrize(
    "amount",
    [
        b"1234567890123456789e" + b"0" * 5000 + b"1",
        b"12345678901234567890e99999",
        b"0012345678901234567",
    ],
)
def test_malformed_long_amounts_are_not_500s(amount: bytes) -> None:
    body = _purchase_with(amount)
    try:
        parsed = parse_body(body, max_events=500, max_event_bytes=32 * 1024)
    except BodyError as error:
        assert error.status == 400
    else:
        # An exponent of 5,000 digits is valid JSON; it is read as a float, not refused.
        assert parsed.count == 1


@pytest.mark.parametrize(
    "amount",
    [
        b"1234567890123456789" + b"0" * 41 + b"e-41",
        b"0." + b"0" * 40 + b"1234567890123456789e58",
    ],
)
def test_exponents_that_cancel_stay_exact(amount: bytes) -> None:
    from decimal import Decimal

    parsed = parse_body(_purchase_with(amount), max_events=500, max_event_bytes=32 * 1024)
    assert parsed.rejected == []
    assert parsed.events[0][1].properties.amount == Decimal(amount.decode())
