"""Where acknowledged events ended up: the sink's copies and the DuckDB staging table.

The delivery invariant that the fault tests check: every event that got a 200 reaches the
sink at least once, and after ``collector warehouse load`` and ``run`` on DuckDB it appears
exactly once in ``staging.stg_events``.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from collector.warehouse.loader import EVENTS_FOLDER, LoadResult, load_events
from collector.warehouse.runner import DuckDBTarget, RunOptions, connect_duckdb, run_pipeline
from tests.pubsub_server import PublishedMessage


@dataclass
class SinkCopies:
    """Event ids found in the sink, one entry per stored copy, and lines that did not parse."""

    event_ids: list[str] = field(default_factory=list)
    unreadable_lines: int = 0

    def counts(self) -> collections.Counter[str]:
        return collections.Counter(self.event_ids)


def read_local_sink(data_dir: Path) -> SinkCopies:
    """Read the event ids of every row in ``data_dir``/events/*.ndjson.

    A line that is not JSON (a partial last line left by SIGKILL) is counted, not raised.
    """
    copies = SinkCopies()
    for path in sorted((data_dir / EVENTS_FOLDER).glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                copies.event_ids.append(orjson.loads(line)["event_id"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                copies.unreadable_lines += 1
    return copies


def write_pubsub_rows(messages: Iterable[PublishedMessage], data_dir: Path) -> SinkCopies:
    """Write each message's row as one NDJSON line under ``data_dir``/events/.

    The message id and attributes are added as a BigQuery subscription with write_metadata
    adds them, so the loader reads the file like a local sink file. Returns the copies.
    """
    folder = data_dir / EVENTS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    copies = SinkCopies()
    with (folder / "pubsub-messages.ndjson").open("wb") as handle:
        for message in messages:
            row = orjson.loads(message.data)
            copies.event_ids.append(row["event_id"])
            row["message_id"] = message.message_id
            row["attributes"] = message.attributes
            handle.write(orjson.dumps(row) + b"\n")
    return copies


@dataclass
class StagingResult:
    """What the warehouse run built: rows per event_id in staging, and the load totals."""

    counts: dict[str, int]
    load: LoadResult


def build_staging(data_dir: Path, database: Path) -> StagingResult:
    """Load ``data_dir``'s event files into ``database`` and rebuild raw and staging."""
    load = load_events(data_dir, database)
    connection = connect_duckdb(database)
    try:
        run_pipeline(
            DuckDBTarget(connection), RunOptions(full_refresh=True), stages=("raw", "staging")
        )
        rows = connection.execute(
            "SELECT event_id, count(*) FROM staging.stg_events GROUP BY event_id"
        ).fetchall()
    finally:
        connection.close()
    return StagingResult({event_id: count for event_id, count in rows}, load)


@dataclass
class DeliveryReport:
    """Acknowledged events compared with the sink's copies and with staging."""

    acknowledged: int
    missing_in_sink: list[str]
    copies_in_sink: int
    events_with_several_copies: int
    missing_in_staging: list[str]
    repeated_in_staging: dict[str, int]


def compare(acknowledged: set[str], sink: SinkCopies, staging: StagingResult) -> DeliveryReport:
    counts = sink.counts()
    return DeliveryReport(
        acknowledged=len(acknowledged),
        missing_in_sink=sorted(acknowledged - counts.keys()),
        copies_in_sink=len(sink.event_ids),
        events_with_several_copies=sum(1 for count in counts.values() if count > 1),
        missing_in_staging=sorted(acknowledged - staging.counts.keys()),
        repeated_in_staging={
            event_id: count for event_id, count in staging.counts.items() if count != 1
        },
    )
