"""Write the seed corpus in tests/fuzz/corpus/ for the body decoder fuzz target.

Run ``python -m tests.fuzz.make_corpus`` after a model change. Ids and times are fixed, so
the output is the same on every run and only real changes show in the diff. Each file is
one input: a mode byte (see decode_target.py) followed by the body.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

from tests.conftest import EXAMPLES
from tests.fuzz.decode_target import CONTENT_TYPES, DEBUG, GZIP, HANDLER

CORPUS = Path(__file__).resolve().parent / "corpus"
OCCURRED_AT = "2026-12-04T11:59:00.250Z"
SENT_AT = "2026-12-04T11:59:30+01:00"


def mode(
    *,
    gzipped: bool = False,
    content_type: bytes | None = b"application/json",
    handler: bool = False,
    debug: bool = False,
) -> int:
    value = CONTENT_TYPES.index(content_type) << 1
    if gzipped:
        value |= GZIP
    if handler:
        value |= HANDLER
    if debug:
        value |= DEBUG
    return value


def event(name: str, number: int, **overrides: Any) -> dict[str, Any]:
    content, properties = EXAMPLES[name]
    result: dict[str, Any] = {
        "event_id": f"00000000-0000-4000-8000-{number:012d}",
        "event_name": name,
        "occurred_at": OCCURRED_AT,
        "anonymous_id": "anon-1",
        "session_id": "session-1",
        "properties": copy.deepcopy(properties),
    }
    if content is not None:
        result["content"] = copy.deepcopy(content)
    result.update(overrides)
    return result


def dumps(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def seeds() -> dict[str, bytes]:
    """Return the seed inputs by file name."""
    items: dict[str, bytes] = {}
    for number, name in enumerate(EXAMPLES, start=1):
        items[f"event-{name}"] = bytes([mode()]) + dumps(event(name, number))

    three = [event(name, 20 + index) for index, name in enumerate(EXAMPLES) if index < 3]
    batch = {"sent_at": SENT_AT, "key": "pk_example", "events": three}
    mixed = [event("page_turned", 30), 5, event("page_turned", 31, properties={})]
    purchase = event("purchase", 40)
    purchase["properties"]["amount"] = 12.5
    big_amount = event("purchase", 41)
    big_amount["properties"]["amount"] = 12345678901234567890123456789
    far_clock = event(
        "session_start", 50, occurred_at="0001-01-01T00:00:00Z", sent_at="9999-12-31T00:00:00Z"
    )
    edge_clock = event(
        "session_start",
        51,
        occurred_at="0001-01-01T00:00:00+23:59",
        sent_at="0001-01-01T00:00:00+23:59",
    )
    context = {"page_url": "https://site.example/é", "locale": "fr-FR", "platform": "web"}
    documents: dict[str, tuple[int, bytes]] = {
        "array-text-plain-handler": (
            mode(content_type=b"text/plain;charset=UTF-8", handler=True),
            dumps(three),
        ),
        "batch-handler": (mode(handler=True), dumps(batch)),
        "batch-debug-handler": (mode(handler=True, debug=True), dumps(batch)),
        "batch-no-content-type": (mode(content_type=None), dumps(batch)),
        "mixed-batch": (mode(), dumps(mixed)),
        "mixed-batch-handler": (mode(handler=True), dumps(mixed)),
        "purchase-number-amount": (mode(), dumps(purchase)),
        "purchase-big-amount-mixed": (mode(), dumps([big_amount, 0])),
        "far-client-clock": (mode(), dumps([far_clock])),
        "offset-edge-clock": (mode(), dumps([edge_clock])),
        "context-unicode": (mode(), dumps(event("book_opened", 60, context=context))),
        "escapes": (
            mode(),
            b'{"event_id":"00000000-0000-4000-8000-000000000070","event_name":"session_start",'
            b'"occurred_at":"2026-12-04T11:59:00Z","user_id":"\\u00e9\\ud83d\\ude00\\u0000",'
            b'"session_id":"s"}',
        ),
        "lone-surrogate": (mode(), b'{"event_name":"session_start","user_id":"\\ud800"}'),
        "duplicate-keys": (
            mode(),
            dumps(event("session_start", 71))[:-1] + b',"user_id":"a","user_id":"b"}',
        ),
        "nan-token": (mode(), b'[{"properties":{"duration_seconds":NaN}}]'),
        "huge-exponent": (mode(), b'[{"properties":{"duration_seconds":1e400}}]'),
        "byte-order-mark": (mode(), b"\xef\xbb\xbf" + dumps(event("session_start", 72))),
        "deep-nesting": (mode(), b"[" * 300 + b"]" * 300),
        "empty": (mode(), b""),
        "whitespace": (mode(), b" \t\r\n"),
        "null": (mode(), b"null"),
        "empty-array": (mode(), b"[]"),
        "empty-batch": (mode(), b'{"events":[]}'),
        "batch-unknown-field": (mode(), b'{"events":[],"colour":1}'),
        "batch-events-not-array": (mode(), b'{"events":{}}'),
    }
    for name, (flags, body) in documents.items():
        items[name] = bytes([flags]) + body

    packed = gzip.compress(dumps(batch), mtime=0)
    items["gzip-batch"] = bytes([mode(gzipped=True)]) + packed
    items["gzip-batch-handler"] = bytes([mode(gzipped=True, handler=True)]) + packed
    items["gzip-zero-padding"] = bytes([mode(gzipped=True)]) + packed + b"\x00" * 8
    items["gzip-two-members"] = bytes([mode(gzipped=True)]) + packed + packed
    items["gzip-truncated"] = bytes([mode(gzipped=True)]) + packed[:-6]
    items["gzip-empty-member"] = bytes([mode(gzipped=True)]) + gzip.compress(b"", mtime=0)
    return items


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    for old in CORPUS.iterdir():
        old.unlink()
    for name, data in seeds().items():
        (CORPUS / name).write_bytes(data)
    print(f"wrote {len(seeds())} seeds to {CORPUS}")


if __name__ == "__main__":
    main()
