"""The warehouse SQL on a real DuckDB file, checked against hand-computed marts.

The fixture tests/fixtures/warehouse/events.ndjson contains 30 raw rows (28 distinct events)
from 2026-03-01 to 2026-03-04; its README lists them. Event numbers below are the last
digits of the event_id, 00000000-0000-4000-8000-0000000000NN.
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from collector.warehouse.loader import load_events
from collector.warehouse.runner import (
    FULL_REFRESH_START,
    DuckDBTarget,
    RunOptions,
    connect_duckdb,
    run_pipeline,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "warehouse" / "events.ndjson"


def event_id(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


def build(tmp_path: Path, options: RunOptions | None = None) -> Path:
    """Load the fixture into a fresh DuckDB file, run every SQL file, return the file."""
    data_dir = tmp_path / "data"
    (data_dir / "events").mkdir(parents=True)
    shutil.copy(FIXTURE, data_dir / "events" / "events-fixture.ndjson")
    database = tmp_path / "warehouse.duckdb"
    load_events(data_dir, database)
    run(database, options or RunOptions(full_refresh=True))
    return database


def run(database: Path, options: RunOptions) -> list[Any]:
    connection = connect_duckdb(database)
    try:
        return run_pipeline(DuckDBTarget(connection), options)
    finally:
        connection.close()


def query(database: Path, sql: str) -> list[tuple[Any, ...]]:
    connection = connect_duckdb(database)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def table_rows(database: Path, table: str) -> list[tuple[Any, ...]]:
    return query(database, f"SELECT * FROM {table} ORDER BY ALL")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("warehouse"))


def test_daily_active_users_match_hand_count(warehouse: Path) -> None:
    rows = query(
        warehouse,
        "SELECT activity_date, platform, active_users FROM marts.daily_active_users "
        "ORDER BY activity_date, platform",
    )
    assert rows == [
        # 03-01 web: d-u1 (1, before login) and u1 (2-5) are two user keys.
        (date(2026, 3, 1), "all", 4),
        # a3 (11, 12): its clock read 2026-03-02 01:30, the corrected time is 03-01 23:30.
        (date(2026, 3, 1), "android", 1),
        (date(2026, 3, 1), "ios", 1),  # u2 (7, 8); bot-1 (9, 10) is excluded
        (date(2026, 3, 1), "web", 2),
        # 03-02: u1 (13, 14, 15, 27), u2 (16, plus 20 and 21 that arrived on 03-03),
        # u4 (17-19, no context, so 'unknown').
        (date(2026, 3, 2), "all", 3),
        (date(2026, 3, 2), "ios", 1),
        (date(2026, 3, 2), "unknown", 1),
        (date(2026, 3, 2), "web", 1),
        # 03-03: u1 (22, 23), a3 (24), u4 (28, 30). The second copy of 16 would put u2 on
        # 03-03, but only the first copy is kept; bot-1 (25) is excluded.
        (date(2026, 3, 3), "all", 3),
        (date(2026, 3, 3), "android", 1),
        (date(2026, 3, 3), "unknown", 1),
        (date(2026, 3, 3), "web", 1),
        # 03-04: a3's repeated order (29).
        (date(2026, 3, 4), "all", 1),
        (date(2026, 3, 4), "android", 1),
    ]


def test_content_completion_matches_hand_count(warehouse: Path) -> None:
    rows = query(
        warehouse,
        "SELECT content_id, content_type, starters, completers, completion_rate "
        "FROM marts.content_completion ORDER BY content_id",
    )
    assert rows == [
        # Started by a3 (11) and u4 (18); a3 finished chapter 3 of 3 (12), u4 only 2 of 3.
        ("au-1", "audio", 2, 1, 0.5),
        # Started by u1 (2), who finished chapter 2 of 2 (5). u4 also finished it (30) but
        # never opened it, and bot-1 (9, 10) is excluded.
        ("bk-1", "book", 1, 1, 1.0),
        # u2 opened it (20) and finished chapter 5 of 5 (21), both received a day late.
        ("bk-2", "book", 1, 1, 1.0),
        # Started by u2 (7) and u1 (22). u2 paused at 570 of 600 s, exactly 95 %, which
        # counts (8); u1 paused at 300 s (23).
        ("vd-1", "video", 2, 1, 0.5),
    ]


def test_revenue_daily_matches_hand_count(warehouse: Path) -> None:
    rows = query(
        warehouse,
        "SELECT revenue_date, currency, product_type, orders, revenue FROM marts.revenue_daily "
        "ORDER BY revenue_date, currency, product_type",
    )
    assert rows == [
        # o-2 12.50 (16; its second copy is dropped) + o-6 7.25 (27).
        (date(2026, 3, 2), "EUR", "book", 2, Decimal("19.750000000")),
        (date(2026, 3, 2), "JPY", "audiobook", 1, Decimal("1500.000000000")),  # o-3 (17)
        # o-1 was sent twice (14, 15) with two event ids: one order.
        (date(2026, 3, 2), "USD", "subscription", 1, Decimal("9.990000000")),
        # o-4 (24); the repeat on 03-04 (29) is the same order.
        (date(2026, 3, 3), "GBP", "subscription", 1, Decimal("4.990000000")),
        # o-7 (28): all nine decimals survive. bot-1's o-5 (25) is excluded.
        (date(2026, 3, 3), "USD", "subscription", 1, Decimal("0.123456789")),
    ]


def test_revenue_is_numeric_not_float(warehouse: Path) -> None:
    assert column_types(warehouse, "marts", "revenue_daily")["revenue"] == "DECIMAL(38,9)"
    assert column_types(warehouse, "staging", "stg_events")["amount"] == "DECIMAL(38,9)"


def column_types(database: Path, schema: str, table: str) -> dict[str, str]:
    rows = query(
        database,
        "SELECT column_name, data_type FROM duckdb_columns() "
        f"WHERE schema_name = '{schema}' AND table_name = '{table}'",
    )
    return dict(rows)


def test_staging_keeps_first_received_copy(warehouse: Path) -> None:
    rows = query(
        warehouse,
        "SELECT event_id, event_at, received_at FROM staging.stg_events "
        f"WHERE event_id IN ('{event_id(5)}', '{event_id(16)}') ORDER BY event_id",
    )
    assert rows == [
        # The retry of 5 comes first in the file but was received later (10:45:00.3).
        (
            event_id(5),
            datetime(2026, 3, 1, 10, 40, tzinfo=UTC),
            datetime(2026, 3, 1, 10, 40, 2, tzinfo=UTC),
        ),
        (
            event_id(16),
            datetime(2026, 3, 2, 10, 0, tzinfo=UTC),
            datetime(2026, 3, 2, 10, 0, 1, tzinfo=UTC),
        ),
    ]


def test_staging_has_one_row_per_event(warehouse: Path) -> None:
    assert query(warehouse, "SELECT count(*) FROM raw.book_media_events") == [(30,)]
    assert query(
        warehouse, "SELECT count(*), count(DISTINCT event_id) FROM staging.stg_events"
    ) == [(28, 28)]


def test_staging_types_properties(warehouse: Path) -> None:
    rows = query(
        warehouse,
        "SELECT event_name, user_key, platform, page_number, page_count, page_direction, "
        "seconds_on_page, position_seconds, duration_seconds, playback_rate, chapter_index, "
        "chapter_count, order_id, product_type, amount, currency, plan, is_bot, event_date "
        "FROM staging.stg_events "
        f"WHERE event_id IN ('{event_id(3)}', '{event_id(11)}', '{event_id(14)}', "
        f"'{event_id(10)}') ORDER BY event_id",
    )
    assert rows == [
        ("page_turned", "u1", "web", 1, 40, "forward", 60.0, None, None, None, None, None,
         None, None, None, None, None, False, date(2026, 3, 1)),
        ("chapter_completed", "bot-1", "web", None, None, None, None, None, None, None, 2, 2,
         None, None, None, None, None, True, date(2026, 3, 1)),
        # Skewed clock: occurred_at reads 03-02, the corrected event_date is 03-01.
        ("audio_played", "a3", "android", None, None, None, None, 0.0, 1800.0, 1.25, None,
         None, None, None, None, None, None, False, date(2026, 3, 1)),
        ("purchase", "u1", "web", None, None, None, None, None, None, None, None, None,
         "o-1", "subscription", Decimal("9.99"), "USD", "monthly", False, date(2026, 3, 2)),
    ]  # fmt: skip


def test_staging_run_twice_gives_same_table(tmp_path: Path) -> None:
    database = build(tmp_path)
    first = table_rows(database, "staging.stg_events")
    marts_first = [table_rows(database, f"marts.{name}") for name in MARTS]

    results = run(database, RunOptions(as_of=date(2026, 3, 4), lookback_days=1))
    assert [result.mode for result in results] == ["create"] + ["incremental"] * 4
    results = run(database, RunOptions(as_of=date(2026, 3, 4), lookback_days=1))

    assert table_rows(database, "staging.stg_events") == first
    assert [table_rows(database, f"marts.{name}") for name in MARTS] == marts_first


def test_incremental_run_matches_full_refresh(tmp_path: Path) -> None:
    # Day one: only what had been received by 2026-03-02 is there.
    lines = FIXTURE.read_bytes().splitlines(keepends=True)
    early = [line for line in lines if orjson.loads(line)["received_at"] < "2026-03-03"]
    late = [line for line in lines if line not in early]
    data_dir = tmp_path / "data"
    (data_dir / "events").mkdir(parents=True)
    (data_dir / "events" / "events-1.ndjson").write_bytes(b"".join(early))
    database = tmp_path / "incremental.duckdb"
    load_events(data_dir, database)
    first = run(database, RunOptions(as_of=date(2026, 3, 2), lookback_days=1))
    # The staging table did not exist yet, so the first run rebuilt everything.
    assert first[1].mode == "full refresh"
    assert first[1].window_start == FULL_REFRESH_START

    # Day three: the rest arrives, among it a second copy of 16 and the late 20 and 21.
    (data_dir / "events" / "events-2.ndjson").write_bytes(b"".join(late))
    load_events(data_dir, database)
    second = run(database, RunOptions(as_of=date(2026, 3, 4), lookback_days=1))
    assert second[1].mode == "incremental"
    assert second[1].window_start == date(2026, 3, 3)

    reference = build(tmp_path / "reference")
    for table in ("staging.stg_events", *(f"marts.{name}" for name in MARTS)):
        assert table_rows(database, table) == table_rows(reference, table), table


def test_full_refresh_rebuilds_what_incremental_skips(tmp_path: Path) -> None:
    database = build(tmp_path)
    # A row is loaded into an old raw partition behind the runner's back, as a replayed
    # archive would be. An incremental run does not look that far back.
    connection = connect_duckdb(database)
    connection.execute(
        "INSERT INTO raw.book_media_events SELECT * REPLACE ("
        f"'{event_id(99)}' AS event_id) FROM raw.book_media_events WHERE event_id = ?",
        [event_id(13)],
    )
    connection.close()
    run(database, RunOptions(as_of=date(2026, 3, 4), lookback_days=0))
    assert query(database, "SELECT count(*) FROM staging.stg_events") == [(28,)]

    results = run(database, RunOptions(full_refresh=True))
    assert [result.mode for result in results] == ["create"] + ["full refresh"] * 4
    assert query(database, "SELECT count(*) FROM staging.stg_events") == [(29,)]


def test_runner_pins_duckdb_time_zone_to_utc(tmp_path: Path) -> None:
    database = tmp_path / "tz.duckdb"
    plain = duckdb.connect(str(database))
    plain.execute("SET TimeZone = 'Asia/Tokyo'")
    # Under Tokyo time, a DuckDB session would put 2026-03-01 23:30 UTC on 03-02.
    assert plain.execute(
        "SELECT CAST(TIMESTAMPTZ '2026-03-01 23:30:00+00' AS DATE)"
    ).fetchone() == (date(2026, 3, 2),)
    plain.close()
    connection = connect_duckdb(database)
    assert connection.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
    connection.close()


MARTS = ("daily_active_users", "content_completion", "revenue_daily")
