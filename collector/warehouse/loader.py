"""Load the local sink's NDJSON files into ``raw.book_media_events`` in a DuckDB file.

Loading is idempotent and safe while the collector is still writing:

- Only complete lines are read. A file that is being appended to, or that ends in a
  truncated line, is read up to its last newline, and the rest waits for the next run.
- ``meta.loaded_files`` stores, per file name, the byte offset already loaded, so a run
  reads only what was appended since. The rows and the new offset are written in one
  transaction.
- A row whose (event_id, received_at) is already in the table is skipped. That pair names
  one received copy, so files that are renamed, copied or rewritten add nothing twice.
  If a file shrank, or the stored offset no longer ends a line, the file is read again
  from the start and this check removes what was already loaded.

A complete line that is not a JSON object with the required columns is skipped and counted.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson

from collector.warehouse.runner import DuckDBTarget, RunOptions, connect_duckdb, run_pipeline

log = logging.getLogger(__name__)

EVENTS_FOLDER = "events"
RAW_TABLE = "raw.book_media_events"
STATE_TABLE = "meta.loaded_files"
DATABASE_FILE = "warehouse.duckdb"
# Bytes read from a file at a time; a file larger than this is loaded in several steps.
CHUNK_BYTES = 8 * 1024 * 1024

# Columns that are NOT NULL in the raw table.
_REQUIRED = (
    "event_id",
    "event_name",
    "occurred_at",
    "received_at",
    "occurred_at_corrected",
    "key_id",
    "is_bot",
    "schema_version",
)
_JSON_COLUMNS = ("properties", "attributes")


@dataclass
class LoadResult:
    """Totals for one load run."""

    files: int = 0
    rows_read: int = 0
    rows_loaded: int = 0
    bad_lines: int = 0


def default_database(data_dir: Path) -> Path:
    """Return the DuckDB file used when none is given: ``<data_dir>/warehouse.duckdb``."""
    return Path(data_dir) / DATABASE_FILE


def load_events(data_dir: Path, database: Path | None = None) -> LoadResult:
    """Load every ``<data_dir>/events/*.ndjson`` file into ``database``.

    Creates the raw table first (by running the raw SQL files) if it does not exist.
    """
    folder = Path(data_dir) / EVENTS_FOLDER
    connection = connect_duckdb(database or default_database(data_dir))
    try:
        run_pipeline(DuckDBTarget(connection), RunOptions(), stages=("raw",))
        _create_state_table(connection)
        columns = _column_types(connection)
        result = LoadResult()
        for path in sorted(folder.glob("*.ndjson")):
            _load_file(connection, path, columns, result)
        return result
    finally:
        connection.close()


def _create_state_table(connection: duckdb.DuckDBPyConnection) -> None:
    connection.execute("CREATE SCHEMA IF NOT EXISTS meta")
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} ("
        "file_name VARCHAR PRIMARY KEY, loaded_bytes BIGINT NOT NULL, "
        "loaded_rows BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL)"
    )


def _column_types(connection: duckdb.DuckDBPyConnection) -> dict[str, str]:
    rows = connection.execute(f"DESCRIBE {RAW_TABLE}").fetchall()
    return {name: column_type for name, column_type, *_ in rows}


def _load_file(
    connection: duckdb.DuckDBPyConnection,
    path: Path,
    columns: dict[str, str],
    result: LoadResult,
) -> None:
    result.files += 1
    offset = _start_offset(connection, path)
    while True:
        lines, end = read_complete_lines(path, offset, CHUNK_BYTES)
        if end == offset:
            return
        rows = _parse_lines(path, lines, result)
        result.rows_read += len(rows)
        result.rows_loaded += _insert(connection, path, rows, columns, end, result)
        offset = end


def _start_offset(connection: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Return where to resume reading ``path``: the stored offset, or 0 if it is unusable."""
    row = connection.execute(
        f"SELECT loaded_bytes FROM {STATE_TABLE} WHERE file_name = ?",  # noqa: S608  # nosec B608  # constant
        [path.name],
    ).fetchone()
    if row is None:
        return 0
    offset = int(row[0])
    size = path.stat().st_size
    if offset > size:
        log.warning(
            "event file shrank since the last load; reading it again from the start",
            extra={"file": path.name, "loaded_bytes": offset, "size": size},
        )
        return 0
    if offset > 0 and not _ends_line(path, offset):
        log.warning(
            "stored offset does not end a line; reading the file again from the start",
            extra={"file": path.name, "loaded_bytes": offset},
        )
        return 0
    return offset


def _ends_line(path: Path, offset: int) -> bool:
    with path.open("rb") as handle:
        handle.seek(offset - 1)
        return handle.read(1) == b"\n"


def read_complete_lines(path: Path, offset: int, max_bytes: int) -> tuple[list[bytes], int]:
    """Read the complete lines of ``path`` from ``offset``, about ``max_bytes`` at most.

    Returns the lines without their newlines and the offset just past the last newline
    read. Bytes after the last newline are left for a later call. A single line longer
    than ``max_bytes`` is still returned whole.
    """
    with Path(path).open("rb") as handle:
        handle.seek(offset)
        data = handle.read(max_bytes)
        cut = data.rfind(b"\n")
        while cut < 0 and len(data) > 0:
            more = handle.read(max_bytes)
            if not more:
                return [], offset
            data += more
            cut = data.rfind(b"\n")
    if cut < 0:
        return [], offset
    complete = data[: cut + 1]
    return complete.splitlines(), offset + len(complete)


def _parse_lines(path: Path, lines: list[bytes], result: LoadResult) -> list[dict[str, Any]]:
    rows = []
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        row = _parse_row(line)
        if row is None:
            bad += 1
            continue
        rows.append(row)
    if bad:
        result.bad_lines += bad
        log.warning(
            "skipped lines that are not raw event rows", extra={"file": path.name, "lines": bad}
        )
    return rows


def _parse_row(line: bytes) -> dict[str, Any] | None:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(row, dict) or any(row.get(name) in (None, "") for name in _REQUIRED):
        return None
    for name in _JSON_COLUMNS:
        value = row.get(name)
        # Accept properties as a JSON object or as a string holding one, so rows written in
        # either form load the same way.
        if isinstance(value, str):
            try:
                row[name] = orjson.loads(value)
            except orjson.JSONDecodeError:
                return None
    return row


def _insert(
    connection: duckdb.DuckDBPyConnection,
    path: Path,
    rows: list[dict[str, Any]],
    columns: dict[str, str],
    end_offset: int,
    result: LoadResult,
) -> int:
    """Insert new rows and store ``end_offset`` in one transaction; return rows added.

    If DuckDB rejects a value (a row of the right shape with a wrong type), the rows are
    tried one at a time, the rejected ones are counted as bad lines, and the rest load.
    """
    try:
        return _insert_batch(connection, path, rows, columns, end_offset)
    except (duckdb.ConversionException, duckdb.InvalidInputException, duckdb.ConstraintException):
        pass
    good = [row for row in rows if _row_converts(connection, row, columns)]
    bad = len(rows) - len(good)
    result.bad_lines += bad
    log.warning(
        "skipped rows with values that do not fit the raw table",
        extra={"file": path.name, "rows": bad},
    )
    return _insert_batch(connection, path, good, columns, end_offset)


def _insert_batch(
    connection: duckdb.DuckDBPyConnection,
    path: Path,
    rows: list[dict[str, Any]],
    columns: dict[str, str],
    end_offset: int,
) -> int:
    temporary = _write_rows(rows, columns)
    try:
        connection.execute("BEGIN TRANSACTION")
        try:
            before = _count(connection)
            if rows:
                connection.execute(_INSERT_NEW_ROWS, [temporary, columns])
            added = _count(connection) - before
            connection.execute(_STORE_OFFSET, [path.name, end_offset, path.name, added])
        except duckdb.Error:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    finally:
        os.unlink(temporary)
    return added


def _row_converts(
    connection: duckdb.DuckDBPyConnection, row: dict[str, Any], columns: dict[str, str]
) -> bool:
    temporary = _write_rows([row], columns)
    try:
        connection.execute(_CONVERT_ROW, [temporary, columns]).fetchall()
    except (duckdb.ConversionException, duckdb.InvalidInputException):
        return False
    finally:
        os.unlink(temporary)
    return True


def _write_rows(rows: list[dict[str, Any]], columns: dict[str, str]) -> str:
    with tempfile.NamedTemporaryFile("wb", suffix=".ndjson", delete=False) as handle:
        for row in rows:
            handle.write(orjson.dumps({name: row.get(name) for name in columns}))
            handle.write(b"\n")
        return handle.name


# Copies already in the table, or repeated within the new rows, are left out.
_INSERT_NEW_ROWS = """
INSERT INTO raw.book_media_events BY NAME
SELECT * FROM read_json(?, format = 'newline_delimited', columns = ?) AS new
WHERE NOT EXISTS (
    SELECT 1 FROM raw.book_media_events AS old
    WHERE old.event_id = new.event_id AND old.received_at = new.received_at
)
QUALIFY row_number() OVER (PARTITION BY event_id, received_at) = 1
"""

_STORE_OFFSET = """
INSERT OR REPLACE INTO meta.loaded_files
SELECT ?, ?, coalesce((SELECT loaded_rows FROM meta.loaded_files WHERE file_name = ?), 0) + ?, now()
"""

_CONVERT_ROW = "SELECT * FROM read_json(?, format = 'newline_delimited', columns = ?)"


def _count(connection: duckdb.DuckDBPyConnection) -> int:
    row = connection.execute(f"SELECT count(*) FROM {RAW_TABLE}").fetchone()  # noqa: S608  # nosec B608
    return int(row[0]) if row else 0
