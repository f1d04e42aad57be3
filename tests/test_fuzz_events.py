"""Property tests of event validation: generated valid events are accepted and events with
one rule broken are rejected naming that field, in process and against a real collector."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from collector.enrich import RequestContext, TimeRangeError, row_json
from collector.intake import MAX_ECHO, ParsedBody, parse_body
from collector.models import EVENT_NAMES
from tests.conftest import SITE_ORIGIN, CollectorProcess, Keys, make_event
from tests.fuzz.strategies import (
    MAX_EVENT_BYTES,
    MAX_EVENTS,
    Body,
    BrokenEvent,
    any_timestamps,
    broken_events,
    compact_json,
    encode_body,
    request_bodies,
    valid_events,
)

MAX_FUTURE = timedelta(seconds=300)
MAX_PAST = timedelta(days=30)
# (occurred_at, sent_at): a client clock 8000 years off, and timestamps that leave years
# 1-9999 when converted to UTC.
EXTREME_CLOCKS = [
    ("0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"),
    ("0001-01-01T00:00:00+23:59", "0001-01-01T00:00:00+23:59"),
    ("9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59-23:59"),
]

IN_PROCESS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Against a real process: few examples and no shrinking, so a failure costs a bounded number
# of requests. The failing example is printed in full instead of shrunk.
LIVE = settings(
    max_examples=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def parse(raw: bytes) -> ParsedBody:
    return parse_body(raw, MAX_EVENTS, MAX_EVENT_BYTES)


def canonical_id(text: str) -> str:
    return str(uuid.UUID(text))


def expected_amount(sent: Any) -> Decimal:
    """The exact value of an amount as it was written in the JSON body."""
    if isinstance(sent, float):
        return Decimal(repr(sent))
    return Decimal(sent) if isinstance(sent, int) else Decimal(sent.strip())


def store(parsed: ParsedBody, received_at: datetime | None = None) -> list[dict[str, Any]]:
    """Build and encode the rows the collector would publish, as the handler does."""
    request = RequestContext(
        received_at=received_at or datetime.now(UTC),
        key_id="test",
        client_ip=None,
        user_agent=None,
        is_bot=False,
    )
    rows = []
    for _, event in parsed.events:
        rows.append(
            orjson.loads(row_json(event, parsed.batch_sent_at, request, MAX_FUTURE, MAX_PAST))
        )
    return rows


def single_limit(body: Body) -> int | None:
    return MAX_EVENT_BYTES if body.shape == "single" else None


# In process ------------------------------------------------------------------------------


@IN_PROCESS
@given(data=st.data())
def test_valid_bodies_parse_and_store(data: st.DataObject) -> None:
    body = data.draw(request_bodies())
    raw = data.draw(encode_body(body.document, single_limit(body)))
    parsed = parse(raw)
    assert parsed.rejected == []
    assert parsed.count == len(body.events)
    assert [index for index, _ in parsed.events] == list(range(len(body.events)))

    rows = store(parsed)
    for row, event in zip(rows, body.events, strict=True):
        assert row["event_id"] == canonical_id(event["event_id"])
        assert row["event_name"] == event["event_name"]
        if event["event_name"] == "purchase":
            sent = event["properties"]["amount"]
            assert Decimal(row["properties"]["amount"]) == expected_amount(sent)


def big_amount_purchase() -> dict[str, Any]:
    """A purchase whose amount is a 29-digit JSON integer, beyond 64 bits."""
    event = make_event("purchase")
    event["properties"]["amount"] = 12345678901234567890123456789
    return event


# purchase is drawn about half the time: its amount is the field that has differed.
PURCHASE_HEAVY = st.sampled_from(EVENT_NAMES) | st.just("purchase")


@IN_PROCESS
@given(events=st.lists(valid_events(PURCHASE_HEAVY), min_size=1, max_size=4))
@example(events=[big_amount_purchase()])
def test_slow_path_stores_same_values(events: list[dict[str, Any]]) -> None:
    """An invalid neighbour sends the body down the per-event path; values must not change."""
    fast = parse(compact_json(events))
    slow = parse(compact_json([*events, 0]))
    assert [item.index for item in slow.rejected] == [len(events)]
    received_at = datetime.now(UTC)
    assert store(slow, received_at) == store(fast, received_at)


@IN_PROCESS
@given(data=st.data())
def test_broken_event_names_its_field(data: st.DataObject) -> None:
    broken: BrokenEvent = data.draw(broken_events())
    neighbours = data.draw(st.lists(valid_events(), max_size=3))
    position = data.draw(st.integers(0, len(neighbours)))
    items = [*neighbours[:position], broken.event, *neighbours[position:]]
    document: Any = items if len(items) > 1 or data.draw(st.booleans()) else broken.event
    # A lone event written with \u escapes can pass the event size limit and get 413.
    limit = MAX_EVENT_BYTES if document is broken.event else None
    parsed = parse(data.draw(encode_body(document, limit)))

    assert [item.index for item in parsed.rejected] == [position], broken.rule
    rejection = parsed.rejected[0]
    fields = [error["field"] for error in rejection.errors]
    assert fields == [broken.field], broken.rule
    event_id = broken.event.get("event_id")
    if isinstance(event_id, str):
        expected_echo = event_id if len(event_id) <= MAX_ECHO else event_id[: MAX_ECHO - 3] + "..."
        assert rejection.event_id == expected_echo
    else:
        assert rejection.event_id is None
    assert len(parsed.events) == len(neighbours)


@IN_PROCESS
@given(
    occurred_at=any_timestamps(),
    sent_at=st.none() | any_timestamps(),
    batch_sent_at=st.none() | any_timestamps(),
)
def test_any_timestamp_stored_or_out_of_window(
    occurred_at: str, sent_at: str | None, batch_sent_at: str | None
) -> None:
    """Timestamps the model accepts either give a row or a TimeRangeError, never a crash."""
    event = make_event("page_turned", occurred_at=occurred_at)
    if sent_at is not None:
        event["sent_at"] = sent_at
    batch: dict[str, Any] = {"events": [event]}
    if batch_sent_at is not None:
        batch["sent_at"] = batch_sent_at
    parsed = parse(orjson.dumps(batch))
    assert parsed.rejected == []
    try:
        store(parsed)
    except TimeRangeError:
        pass


def test_extreme_timestamps_stored_or_out_of_window() -> None:
    for occurred_at, sent_at in EXTREME_CLOCKS:
        parsed = parse(orjson.dumps(make_event(occurred_at=occurred_at, sent_at=sent_at)))
        assert parsed.rejected == []
        try:
            store(parsed)
        except TimeRangeError:
            pass


# Against a real collector ----------------------------------------------------------------


def post(
    collector: CollectorProcess,
    raw: bytes,
    headers: dict[str, str],
    params: dict[str, str] | None = None,
) -> httpx.Response:
    return httpx.post(
        collector.url + "/collect", content=raw, headers=headers, params=params, timeout=10
    )


@st.composite
def transports(draw: st.DrawFn, raw: bytes) -> tuple[bytes, dict[str, str]]:
    """Draw how a body travels: Content-Type spelling and gzip or not."""
    headers: dict[str, str] = {}
    content_type = draw(
        st.sampled_from(["application/json", "text/plain;charset=UTF-8", "TEXT/PLAIN", None])
    )
    if content_type is not None:
        headers["Content-Type"] = content_type
    if draw(st.booleans()):
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "x-gzip", "GZIP"]))
        raw = gzip.compress(raw, compresslevel=draw(st.integers(1, 9)))
    return raw, headers


BROWSER_EVENT_NAMES = [name for name in EVENT_NAMES if name != "purchase"]


@LIVE
@given(data=st.data())
def test_collector_accepts_valid_bodies(
    collector: CollectorProcess, keys: Keys, data: st.DataObject
) -> None:
    server = data.draw(st.booleans())
    if server:
        # A server key sends every event name, and only in the X-API-Key header.
        body = data.draw(request_bodies())
    else:
        names = st.sampled_from(BROWSER_EVENT_NAMES)
        body = data.draw(request_bodies(names=names, batch_key=keys.browser))
    raw = data.draw(encode_body(body.document, single_limit(body)))
    raw, headers = data.draw(transports(raw))
    params = None
    if server:
        headers["X-API-Key"] = keys.server
    elif not (isinstance(body.document, dict) and "key" in body.document):
        if data.draw(st.booleans()):
            headers["X-API-Key"] = keys.browser
        else:
            params = {"key": keys.browser}
    if not server and data.draw(st.booleans()):
        headers["Origin"] = SITE_ORIGIN

    response = post(collector, raw, headers, params)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": len(body.events), "rejected": []}
    stored = {row["event_id"] for row in collector.stored_rows()}
    for event in body.events:
        assert canonical_id(event["event_id"]) in stored


@LIVE
@given(data=st.data())
def test_collector_rejects_broken_events(
    collector: CollectorProcess, keys: Keys, data: st.DataObject
) -> None:
    broken: BrokenEvent = data.draw(broken_events())
    alone = data.draw(st.booleans())
    good = make_event("session_start")
    items = [broken.event] if alone else [good, broken.event]
    raw, headers = data.draw(transports(compact_json(items)))
    headers["X-API-Key"] = keys.server

    response = post(collector, raw, headers)
    assert response.status_code == (422 if alone else 200), response.text
    report = response.json()
    assert report["accepted"] == (0 if alone else 1)
    assert [item["index"] for item in report["rejected"]] == [len(items) - 1], broken.rule
    fields = [error["field"] for error in report["rejected"][0]["errors"]]
    assert fields == [broken.field], broken.rule


@pytest.mark.parametrize(("occurred_at", "sent_at"), EXTREME_CLOCKS)
def test_collector_survives_extreme_timestamps(
    collector: CollectorProcess, keys: Keys, occurred_at: str, sent_at: str
) -> None:
    """An extreme client clock must cost its own event only, never the request."""
    extreme = make_event(occurred_at=occurred_at, sent_at=sent_at)
    good = make_event()
    response = post(
        collector,
        orjson.dumps([extreme, good]),
        {"Content-Type": "application/json", "X-API-Key": keys.browser},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["accepted"] == 1
    assert [item["index"] for item in report["rejected"]] == [0]
    assert report["rejected"][0]["errors"][0]["field"] == "occurred_at"
    assert [row["event_id"] for row in collector.stored_rows()] == [good["event_id"]]
