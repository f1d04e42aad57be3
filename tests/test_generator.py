"""scripts/generate_sample_events.py and the sample sessions behind it."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.enrich import ROW_COLUMNS
from collector.models import EVENT_ADAPTER
from collector.warehouse.samples import SampleConfig, generate

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "generate_sample_events.py"
END = datetime(2026, 3, 4, tzinfo=UTC)
CONFIG = SampleConfig(end=END, users=30, days=3, seed=7)
# The command that made examples/sample_events.json, as docs/warehouse.md gives it.
EXAMPLE_ARGS = ["--seed", "7", "--users", "30", "--days", "3", "--end-date", "2026-11-30"]


@pytest.fixture(scope="module")
def raw_rows() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in generate(CONFIG, "raw")]


@pytest.fixture(scope="module")
def client_events() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in generate(CONFIG, "client")]


def test_client_events_validate_against_models(client_events: list[dict[str, Any]]) -> None:
    for event in client_events:
        model = EVENT_ADAPTER.validate_json(orjson.dumps(event))
        assert str(model.event_id) == event["event_id"]
        assert "sent_at" not in event  # collector send stamps the batch itself


def test_raw_rows_have_exactly_the_published_columns(raw_rows: list[dict[str, Any]]) -> None:
    for row in raw_rows:
        assert sorted(row) == sorted(ROW_COLUMNS)
        assert row["key_id"] == "sample"
        assert isinstance(row["properties"], dict)


def test_raw_rows_hold_valid_client_events(raw_rows: list[dict[str, Any]]) -> None:
    client_fields = ("event_id", "event_name", "occurred_at", "user_id", "anonymous_id")
    for row in raw_rows:
        event = {name: row[name] for name in client_fields}
        event["occurred_at"] = row["occurred_at"]
        if row["session_id"] is not None:
            event["session_id"] = row["session_id"]
        for name in ("content", "context"):
            if row[name] is not None:
                event[name] = {key: value for key, value in row[name].items() if value is not None}
        event["properties"] = row["properties"]
        EVENT_ADAPTER.validate_json(orjson.dumps(event))


def test_both_formats_describe_the_same_events(
    raw_rows: list[dict[str, Any]], client_events: list[dict[str, Any]]
) -> None:
    human_ids = {row["event_id"] for row in raw_rows if not row["is_bot"]}
    assert {event["event_id"] for event in client_events} == human_ids


def test_generation_is_deterministic() -> None:
    assert generate(CONFIG, "raw") == generate(CONFIG, "raw")
    assert generate(CONFIG, "client") == generate(CONFIG, "client")
    other_seed = SampleConfig(end=END, users=30, days=3, seed=8)
    assert generate(other_seed, "raw") != generate(CONFIG, "raw")


def test_events_stay_inside_the_requested_days(client_events: list[dict[str, Any]]) -> None:
    times = [datetime.fromisoformat(event["occurred_at"]) for event in client_events]
    assert min(times) >= END - timedelta(days=3)
    assert max(times) < END
    assert len({moment.date() for moment in times}) == 3


def test_sample_has_the_realistic_troubles(raw_rows: list[dict[str, Any]]) -> None:
    ids = [row["event_id"] for row in raw_rows]
    assert len(ids) > len(set(ids)), "no retried deliveries"
    assert any(row["is_bot"] for row in raw_rows), "no crawlers"
    skewed = [
        row
        for row in raw_rows
        if abs(_seconds(row["occurred_at"], row["occurred_at_corrected"])) > 60
    ]
    assert skewed, "no skewed clocks"
    late = [
        row for row in raw_rows if _seconds(row["occurred_at_corrected"], row["received_at"]) > 1800
    ]
    assert late, "no late deliveries"
    purchases = [row["properties"] for row in raw_rows if row["event_name"] == "purchase"]
    assert len({purchase["currency"] for purchase in purchases}) >= 3
    assert {purchase["product_type"] for purchase in purchases} >= {"subscription", "book"}


def test_sessions_move_forward(client_events: list[dict[str, Any]]) -> None:
    sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in client_events:
        if "session_id" in event:
            sessions[event["session_id"]].append(event)
    ended = 0
    for events in sessions.values():
        assert events[0]["event_name"] == "session_start"
        ended += events[-1]["event_name"] == "session_end"
        pages: dict[str, int] = {}
        positions: dict[str, float] = {}
        for event in events:
            properties = event["properties"]
            content_id = event.get("content", {}).get("content_id")
            if event["event_name"] == "page_turned":
                assert properties["page_number"] == pages.get(content_id, 0) + 1 or (
                    content_id not in pages
                )
                pages[content_id] = properties["page_number"]
            if "position_seconds" in properties:
                assert properties["position_seconds"] >= positions.get(content_id, 0.0)
                positions[content_id] = properties["position_seconds"]
    # Most sessions end with session_end; some end abruptly.
    assert 0.6 * len(sessions) < ended < len(sessions)


def test_readers_finish_chapters(client_events: list[dict[str, Any]]) -> None:
    completed = [event for event in client_events if event["event_name"] == "chapter_completed"]
    kinds = {event["content"]["content_type"] for event in completed}
    assert kinds == {"book", "audio"}
    finished = [
        event
        for event in completed
        if event["properties"]["chapter_index"] == event["properties"]["chapter_count"]
    ]
    assert finished


def test_script_writes_raw_rows(tmp_path: Path) -> None:
    output = tmp_path / "sample.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(output), *EXAMPLE_ARGS],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert completed.stderr.startswith("wrote ")
    assert output.read_bytes() == (ROOT / "examples" / "sample_events.json").read_bytes()


def test_example_file_is_small() -> None:
    assert (ROOT / "examples" / "sample_events.json").stat().st_size < 500_000


def test_script_default_ends_now(tmp_path: Path) -> None:
    output = tmp_path / "client.ndjson"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--output",
            str(output),
            "--format",
            "client",
            "--users",
            "5",
            "--days",
            "2",
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    now = datetime.now(UTC)
    times = [
        datetime.fromisoformat(orjson.loads(line)["occurred_at"])
        for line in output.read_bytes().splitlines()
    ]
    assert times
    # Inside the collector's window: at most 30 days old and not in the future.
    assert min(times) > now - timedelta(days=30)
    assert max(times) <= now


def test_sample_config_rejects_naive_end() -> None:
    with pytest.raises(ValueError, match="time zone"):
        SampleConfig(end=datetime(2026, 3, 4))


def _seconds(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()
