"""``collector warehouse load``: idempotent loading of the local sink's files into DuckDB."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from collector.warehouse.loader import LoadResult, load_events, read_complete_lines
from collector.warehouse.runner import connect_duckdb

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "warehouse" / "events.ndjson"
LINES = FIXTURE.read_bytes().splitlines(keepends=True)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    (folder / "events").mkdir(parents=True)
    return folder


def raw_count(data_dir: Path) -> int:
    connection = connect_duckdb(data_dir / "warehouse.duckdb")
    try:
        row = connection.execute("SELECT count(*) FROM raw.book_media_events").fetchone()
    finally:
        connection.close()
    assert row is not None
    return int(row[0])


def loaded_offset(data_dir: Path, name: str) -> int | None:
    connection = connect_duckdb(data_dir / "warehouse.duckdb")
    try:
        row = connection.execute(
            "SELECT loaded_bytes FROM meta.loaded_files WHERE file_name = ?", [name]
        ).fetchone()
    finally:
        connection.close()
    return None if row is None else int(row[0])


def test_load_twice_adds_nothing(data_dir: Path) -> None:
    (data_dir / "events" / "events-a.ndjson").write_bytes(b"".join(LINES))

    first = load_events(data_dir)
    second = load_events(data_dir)

    assert (first.rows_read, first.rows_loaded) == (30, 30)
    # The stored offset means nothing is even read again.
    assert (second.rows_read, second.rows_loaded) == (0, 0)
    assert raw_count(data_dir) == 30


def test_load_of_copied_file_adds_nothing(data_dir: Path) -> None:
    (data_dir / "events" / "events-a.ndjson").write_bytes(b"".join(LINES))
    load_events(data_dir)
    # Same rows under another name: read again, but (event_id, received_at) already exists.
    (data_dir / "events" / "events-copy.ndjson").write_bytes(b"".join(LINES))

    result = load_events(data_dir)

    assert (result.rows_read, result.rows_loaded) == (30, 0)
    assert raw_count(data_dir) == 30


def test_load_reads_only_appended_lines(data_dir: Path) -> None:
    path = data_dir / "events" / "events-a.ndjson"
    path.write_bytes(b"".join(LINES[:10]))
    load_events(data_dir)

    with path.open("ab") as handle:
        handle.write(b"".join(LINES[10:]))
    result = load_events(data_dir)

    assert (result.rows_read, result.rows_loaded) == (20, 20)
    assert loaded_offset(data_dir, path.name) == path.stat().st_size
    assert raw_count(data_dir) == 30


def test_load_leaves_partial_last_line_for_later(data_dir: Path) -> None:
    path = data_dir / "events" / "events-a.ndjson"
    last = LINES[-1]
    # The sink is half way through writing the last line.
    path.write_bytes(b"".join(LINES[:-1]) + last[:40])

    first = load_events(data_dir)
    assert (first.rows_loaded, first.bad_lines) == (29, 0)
    assert loaded_offset(data_dir, path.name) == len(b"".join(LINES[:-1]))

    with path.open("ab") as handle:
        handle.write(last[40:])
    second = load_events(data_dir)
    assert (second.rows_read, second.rows_loaded) == (1, 1)
    assert raw_count(data_dir) == 30


def test_load_tolerates_truncated_last_line_forever(data_dir: Path) -> None:
    # A crash can leave a line that is never finished; it must not block other files.
    (data_dir / "events" / "events-a.ndjson").write_bytes(LINES[0] + LINES[1][:25])
    (data_dir / "events" / "events-b.ndjson").write_bytes(b"".join(LINES[2:]))

    for _ in range(2):
        result = load_events(data_dir)
        assert result.bad_lines == 0
    assert raw_count(data_dir) == 29


def test_load_skips_and_counts_bad_lines(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    wrong_type = orjson.loads(LINES[1])
    wrong_type["received_at"] = "yesterday"
    missing_key = orjson.loads(LINES[2])
    del missing_key["key_id"]
    content = [
        LINES[0],
        b"{not json\n",
        b"[1, 2]\n",
        orjson.dumps(missing_key) + b"\n",
        orjson.dumps(wrong_type) + b"\n",
        b"\n",
        LINES[3],
    ]
    (data_dir / "events" / "events-a.ndjson").write_bytes(b"".join(content))

    with caplog.at_level(logging.WARNING, logger="collector.warehouse.loader"):
        result = load_events(data_dir)

    # Not JSON, not an object, no key_id, and a received_at DuckDB cannot read.
    assert result.bad_lines == 4
    assert result.rows_loaded == 2
    assert raw_count(data_dir) == 2
    messages = [record.getMessage() for record in caplog.records]
    assert "skipped lines that are not raw event rows" in messages
    assert "skipped rows with values that do not fit the raw table" in messages


def test_load_rereads_file_that_shrank(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = data_dir / "events" / "events-a.ndjson"
    path.write_bytes(b"".join(LINES))
    load_events(data_dir)
    # The sink cut back a write it could not fsync, then appended other events.
    path.write_bytes(b"".join(LINES[:5]))

    with caplog.at_level(logging.WARNING, logger="collector.warehouse.loader"):
        result = load_events(data_dir)

    assert (result.rows_read, result.rows_loaded) == (5, 0)
    assert "event file shrank since the last load; reading it again from the start" in [
        record.getMessage() for record in caplog.records
    ]
    assert raw_count(data_dir) == 30


def test_load_accepts_properties_as_json_string(data_dir: Path) -> None:
    row = orjson.loads(LINES[13])  # purchase 14
    row["properties"] = orjson.dumps(row["properties"]).decode()
    (data_dir / "events" / "events-a.ndjson").write_bytes(orjson.dumps(row) + b"\n")

    load_events(data_dir)

    connection = connect_duckdb(data_dir / "warehouse.duckdb")
    try:
        amount = connection.execute(
            "SELECT properties ->> '$.amount' FROM raw.book_media_events"
        ).fetchone()
    finally:
        connection.close()
    assert amount == ("9.99",)


def test_load_with_no_files_creates_empty_table(data_dir: Path) -> None:
    assert load_events(data_dir) == LoadResult()
    assert raw_count(data_dir) == 0


def test_read_complete_lines_stops_at_last_newline(tmp_path: Path) -> None:
    path = tmp_path / "lines.ndjson"
    path.write_bytes(b"first\nsecond\nthi")

    assert read_complete_lines(path, 0, 1024) == ([b"first", b"second"], 13)
    assert read_complete_lines(path, 13, 1024) == ([], 13)
    # A line longer than the chunk size is still returned whole.
    assert read_complete_lines(path, 0, 3) == ([b"first"], 6)
