"""Run the warehouse SQL in order (raw, staging, marts) on DuckDB or BigQuery.

The only query parameter is ``@window_start`` (DATE): the first UTC receive date that the
incremental staging file rebuilds. An incremental run passes ``as_of - lookback_days``. A
full refresh, or a first run whose target table does not exist yet, drops the target and
passes ``FULL_REFRESH_START`` so that everything is rebuilt. Raw tables are never dropped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import duckdb

from collector.warehouse.sqlfiles import STAGES, SqlFile, discover

if TYPE_CHECKING:
    from google.cloud import bigquery

log = logging.getLogger(__name__)

# Earlier than any received_at, so a window starting here covers every raw partition.
FULL_REFRESH_START = date(1970, 1, 1)
DEFAULT_LOOKBACK_DAYS = 3


class WarehouseError(Exception):
    """A statement failed on the target; the message names the file."""


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How much of staging to rebuild.

    Attributes:
        full_refresh: Drop and rebuild every staging and mart table.
        lookback_days: Days of raw partitions before ``as_of`` that an incremental run
            rebuilds; events received earlier stay as they are.
        as_of: The UTC date an incremental window ends on; today when None.
    """

    full_refresh: bool = False
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    as_of: date | None = None

    def __post_init__(self) -> None:
        if self.lookback_days < 0:
            raise ValueError(f"lookback_days must be >= 0, got {self.lookback_days}")

    def window_start(self) -> date:
        """Return the first receive date that an incremental run rebuilds."""
        as_of = self.as_of or datetime.now(UTC).date()
        return as_of - timedelta(days=self.lookback_days)


@dataclass(frozen=True)
class StepResult:
    """The outcome of running one file.

    ``mode`` is ``create`` for raw files (create the table if missing), ``full refresh``
    when the target was dropped and rebuilt, and ``incremental`` otherwise.
    """

    path: Path
    target: str
    mode: str
    window_start: date
    seconds: float


class Target(Protocol):
    """A database that the runner can create schemas, drop tables and run files on."""

    name: str

    def ensure_schema(self, schema: str) -> None: ...

    def table_exists(self, table: str) -> bool: ...

    def drop_table(self, table: str) -> None: ...

    def run_file(self, sql_file: SqlFile, parameters: dict[str, date]) -> None: ...


def connect_duckdb(database: Path | str) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file with the session time zone pinned to UTC.

    BigQuery evaluates DATE(timestamp) and CAST(timestamp AS DATE) in UTC; DuckDB uses the
    session time zone, which defaults to the machine's. Pinning it keeps both the same.
    """
    if str(database) != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect(str(database))
    connection.execute("SET TimeZone = 'UTC'")
    return connection


class DuckDBTarget:
    """Run the SQL on a DuckDB file, transpiled by sqlglot."""

    name = "duckdb"

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self.connection = connection

    def ensure_schema(self, schema: str) -> None:
        self.connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_identifier(schema)}")

    def table_exists(self, table: str) -> bool:
        schema, name = table.split(".", 1)
        row = self.connection.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchone()
        return bool(row and row[0])

    def drop_table(self, table: str) -> None:
        schema, name = table.split(".", 1)
        self.connection.execute(f"DROP TABLE IF EXISTS {_identifier(schema)}.{_identifier(name)}")

    def run_file(self, sql_file: SqlFile, parameters: dict[str, date]) -> None:
        """Run every statement of ``sql_file`` in one transaction."""
        self.connection.execute("BEGIN TRANSACTION")
        try:
            for statement in sql_file.duckdb_statements():
                values = {name: parameters[name] for name in statement.parameters}
                self.connection.execute(statement.duckdb_sql, values)
        except duckdb.Error as exc:
            self.connection.execute("ROLLBACK")
            raise WarehouseError(f"{sql_file.path.name} failed on DuckDB: {exc}") from exc
        self.connection.execute("COMMIT")


class BigQueryTarget:
    """Run the SQL files unchanged on BigQuery, each as one multi-statement query job.

    The client is created on first use, so commands that never reach BigQuery do not need
    google-cloud-bigquery credentials. ``client`` may be passed in to reuse one.
    """

    name = "bigquery"

    def __init__(
        self,
        project: str | None,
        location: str | None,
        client: bigquery.Client | None = None,
    ) -> None:
        self.project = project
        self.location = location
        self._client = client

    @property
    def client(self) -> bigquery.Client:
        if self._client is None:
            from google.auth.exceptions import DefaultCredentialsError
            from google.cloud import bigquery

            try:
                self._client = bigquery.Client(project=self.project, location=self.location)
            except DefaultCredentialsError as exc:
                raise WarehouseError(
                    "no Google credentials for BigQuery: run `gcloud auth application-default "
                    f"login` or set GOOGLE_APPLICATION_CREDENTIALS ({exc})"
                ) from exc
        return self._client

    def ensure_schema(self, schema: str) -> None:
        from google.cloud import bigquery

        dataset = bigquery.Dataset(f"{self.client.project}.{schema}")
        dataset.location = self.location
        self.client.create_dataset(dataset, exists_ok=True)

    def table_exists(self, table: str) -> bool:
        from google.api_core.exceptions import NotFound

        try:
            self.client.get_table(f"{self.client.project}.{table}")
        except NotFound:
            return False
        return True

    def drop_table(self, table: str) -> None:
        self.client.delete_table(f"{self.client.project}.{table}", not_found_ok=True)

    def run_file(self, sql_file: SqlFile, parameters: dict[str, date]) -> None:
        """Send the file text as one query job and wait for it; parameters are typed DATE.

        NOTE: tests run this against a fake client only. Query parameters in a
        multi-statement job have not been tried on live BigQuery from this repository.
        """
        from google.api_core.exceptions import GoogleAPIError
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter(name, "DATE", parameters[name])
                for name in sql_file.parameters
            ]
        )
        try:
            job = self.client.query(sql_file.text, job_config=config, location=self.location)
            job.result()
        except GoogleAPIError as exc:
            raise WarehouseError(f"{sql_file.path.name} failed on BigQuery: {exc}") from exc


def run_pipeline(
    target: Target,
    options: RunOptions,
    sql_dir: Path | None = None,
    stages: tuple[str, ...] = STAGES,
) -> list[StepResult]:
    """Run the SQL files of ``stages`` in order on ``target``.

    Blocks until every file has finished; stops at the first failing file.
    """
    files = [sql_file for sql_file in discover(sql_dir) if sql_file.stage in stages]
    for schema in sorted({sql_file.target.split(".", 1)[0] for sql_file in files}):
        target.ensure_schema(schema)
    results = []
    for sql_file in files:
        results.append(_run_file(target, sql_file, options))
    return results


def _run_file(target: Target, sql_file: SqlFile, options: RunOptions) -> StepResult:
    started = time.monotonic()
    rebuild = sql_file.stage != "raw" and (
        options.full_refresh or not target.table_exists(sql_file.target)
    )
    if rebuild:
        target.drop_table(sql_file.target)
    window_start = FULL_REFRESH_START if rebuild else options.window_start()
    target.run_file(sql_file, {"window_start": window_start})
    mode = "full refresh" if rebuild else "incremental"
    if sql_file.stage == "raw":
        mode = "create"
    seconds = time.monotonic() - started
    result = StepResult(sql_file.path, sql_file.target, mode, window_start, seconds)
    log.info(
        "warehouse file done",
        extra={
            "target": target.name,
            "file": sql_file.path.name,
            "table": sql_file.target,
            "mode": mode,
            "window_start": window_start.isoformat(),
            "seconds": round(seconds, 3),
        },
    )
    return result


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"invalid identifier {name!r}: use letters, digits and underscores")
    return f'"{name}"'
