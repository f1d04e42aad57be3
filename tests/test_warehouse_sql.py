"""Static checks of the GoogleSQL under bigquery/: contract, parsing and portability."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from collector.warehouse.sqlfiles import (
    STAGES,
    SqlFile,
    discover,
    parse_file,
    rewrite_for_duckdb,
)

ROOT = Path(__file__).resolve().parents[1]
SQL_FILES = discover(ROOT / "bigquery")
SQL_IDS = [f"{sql_file.stage}/{sql_file.path.name}" for sql_file in SQL_FILES]

# Type names in the JSON schema file and in sqlglot's BigQuery output that mean the same.
SAME_TYPES = {"BOOLEAN": "BOOL", "RECORD": "STRUCT", "INTEGER": "INT64", "FLOAT": "FLOAT64"}


def _column_spec(name: str, kind: exp.DataType, not_null: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "type": SAME_TYPES.get(kind.this.name, kind.sql(dialect="bigquery").split("<")[0]),
        "mode": "REQUIRED" if not_null else "NULLABLE",
    }
    if kind.this == exp.DataType.Type.STRUCT:
        spec["type"] = "STRUCT"
        spec["fields"] = [_field_spec(field) for field in kind.expressions]
    return spec


def _field_spec(column: exp.ColumnDef) -> dict[str, Any]:
    constraints = column.args.get("constraints") or []
    not_null = any(isinstance(c.kind, exp.NotNullColumnConstraint) for c in constraints)
    return _column_spec(column.name, column.args["kind"], not_null)


def _json_spec(column: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": column["name"],
        "type": SAME_TYPES.get(column["type"], column["type"]),
        "mode": column.get("mode", "NULLABLE"),
    }
    if column["type"] == "RECORD":
        spec["fields"] = [_json_spec(field) for field in column["fields"]]
    return spec


def test_raw_table_matches_bigquery_schema_file() -> None:
    raw = parse_file(ROOT / "bigquery/raw/create_raw_events.sql", "raw")
    create = next(s for s in raw.statements if isinstance(s, exp.Create))
    columns = create.this.expressions
    from_sql = [_field_spec(column) for column in columns]
    schema = json.loads((ROOT / "schemas/book_media_events.json").read_text())
    from_json = [_json_spec(column) for column in schema]
    # Same names, order, types and modes, nested content and context fields included.
    assert from_sql == from_json


def test_raw_table_partition_and_cluster() -> None:
    raw = parse_file(ROOT / "bigquery/raw/create_raw_events.sql", "raw")
    create = next(s for s in raw.statements if isinstance(s, exp.Create))
    partition = create.find(exp.PartitionedByProperty)
    cluster = create.find(exp.ClusterProperty)
    assert partition is not None
    assert partition.this.sql(dialect="bigquery").upper() == "DATE(RECEIVED_AT)"
    assert cluster is not None
    assert [column.name for column in cluster.expressions] == ["event_name"]
    assert create.args.get("exists") is True  # CREATE TABLE IF NOT EXISTS


def test_sql_files_cover_every_stage_in_order() -> None:
    stages = [sql_file.stage for sql_file in SQL_FILES]
    assert stages == sorted(stages, key=STAGES.index)
    assert {sql_file.target for sql_file in SQL_FILES} == {
        "raw.book_media_events",
        "staging.stg_events",
        "marts.daily_active_users",
        "marts.content_completion",
        "marts.revenue_daily",
    }


@pytest.mark.parametrize("sql_file", SQL_FILES, ids=SQL_IDS)
def test_sql_file_creates_one_object_named_after_it(sql_file: SqlFile) -> None:
    creates = [s for s in sql_file.statements if isinstance(s, exp.Create)]
    assert len(creates) == 1
    if sql_file.stage != "raw":  # The raw file keeps its established name.
        assert sql_file.path.stem == "create_" + sql_file.target.split(".")[1]
    # Other statements may only write to the same table.
    for statement in sql_file.statements:
        if isinstance(statement, (exp.Insert, exp.Delete)):
            written = statement.find(exp.Table)
            assert written is not None
            assert f"{written.db}.{written.name}" == sql_file.target


@pytest.mark.parametrize("sql_file", SQL_FILES, ids=SQL_IDS)
def test_sql_file_parses_as_bigquery_without_warnings(sql_file: SqlFile) -> None:
    # ErrorLevel.RAISE turns anything sqlglot would only warn about into an error.
    statements = sqlglot.parse(sql_file.text, read="bigquery", error_level=sqlglot.ErrorLevel.RAISE)
    assert [s for s in statements if s is not None]


@pytest.mark.parametrize("sql_file", SQL_FILES, ids=SQL_IDS)
def test_sql_file_transpiles_to_duckdb_without_unsupported_parts(sql_file: SqlFile) -> None:
    for statement in sql_file.statements:
        rewritten = rewrite_for_duckdb(statement)
        # UNSUPPORTED raises instead of logging "Unsupported ..." and dropping a clause.
        rewritten.sql(dialect="duckdb", unsupported_level=sqlglot.ErrorLevel.RAISE)


# --- portability: constructs whose meaning differs between BigQuery and DuckDB -------------

WEEK_UNITS = {"DAYOFWEEK", "DOW", "WEEK", "ISOWEEK", "WEEKDAY", "DAYOFWEEKISO"}
TIME_ZONE_FREE_CALLS = (exp.CurrentDate, exp.CurrentDatetime, exp.CurrentTimestamp, exp.CurrentTime)
FLOAT_OR_EXACT = {exp.DataType.Type.DOUBLE, exp.DataType.Type.DECIMAL, exp.DataType.Type.FLOAT}


def _bodies(sql_file: SqlFile) -> list[exp.Expression]:
    """Return the statements without partition and cluster specs (storage, not queries)."""
    bodies = []
    for statement in sql_file.statements:
        copy = statement.copy()
        for node in list(copy.find_all(exp.PartitionedByProperty, exp.ClusterProperty)):
            node.pop()
        bodies.append(copy)
    return bodies


@pytest.mark.parametrize("sql_file", SQL_FILES, ids=SQL_IDS)
def test_sql_has_no_week_functions(sql_file: SqlFile) -> None:
    # BigQuery numbers DAYOFWEEK 1 (Sunday) to 7; DuckDB 0 (Sunday) to 6, and week
    # boundaries differ as well.
    for body in _bodies(sql_file):
        for node in body.find_all(exp.Extract, exp.DateTrunc, exp.TimestampTrunc):
            unit = node.args.get("unit") or node.this
            assert unit.name.upper() not in WEEK_UNITS, node.sql(dialect="bigquery")
        weekly = (exp.DayOfWeek, exp.DayOfWeekIso, exp.Week, exp.WeekOfYear, exp.WeekStart)
        assert not list(body.find_all(*weekly)), body.sql(dialect="bigquery")
        # Format strings (%u, %w, %a, %U ...) are dialect specific too.
        assert not list(body.find_all(exp.TimeToStr, exp.TimeStrToTime, exp.StrToTime))


@pytest.mark.parametrize("sql_file", SQL_FILES, ids=SQL_IDS)
def test_sql_states_utc_for_every_date_conversion(sql_file: SqlFile) -> None:
    for body in _bodies(sql_file):
        # CURRENT_DATE() is UTC on BigQuery and the session time zone on DuckDB; the
        # runner passes dates as parameters instead.
        assert not list(body.find_all(*TIME_ZONE_FREE_CALLS))
        for node in body.find_all(exp.Date, exp.Timestamp):
            assert node.args.get("zone") is not None, node.sql(dialect="bigquery")
            assert node.args["zone"].name == "UTC", node.sql(dialect="bigquery")
        for cast in body.find_all(exp.Cast):
            # CAST(timestamp AS DATE) depends on the DuckDB session time zone.
            assert not cast.to.is_type("date", "timestamp", "timestamptz", "datetime"), cast.sql()


@pytest.mark.parametrize("sql_file", SQL_FILES, ids=SQL_IDS)
def test_sql_divides_only_explicit_floats(sql_file: SqlFile) -> None:
    # INT64 / INT64 is FLOAT64 in BigQuery; other engines may truncate. Every division
    # therefore casts both sides, and DIV() and SAFE_DIVIDE() are not used.
    for body in _bodies(sql_file):
        assert not list(body.find_all(exp.IntDiv, exp.SafeDivide))
        for division in body.find_all(exp.Div):
            for side in (division.left, division.right):
                assert isinstance(side, exp.Cast), division.sql(dialect="bigquery")
                assert side.to.this in FLOAT_OR_EXACT, division.sql(dialect="bigquery")


@pytest.mark.parametrize("sql_file", SQL_FILES, ids=SQL_IDS)
def test_sql_uses_no_decimal_literals(sql_file: SqlFile) -> None:
    # 0.95 is FLOAT64 in BigQuery and DECIMAL(3,2) in DuckDB; compare scaled integers.
    for body in _bodies(sql_file):
        for literal in body.find_all(exp.Literal):
            if not literal.is_string:
                assert "." not in literal.this, literal.sql()
                assert "e" not in literal.this.lower(), literal.sql()


def test_duckdb_rewrite_keeps_numeric_exact() -> None:
    statement = sqlglot.parse_one("select cast(x as numeric) as amount from t", read="bigquery")
    duckdb_sql = rewrite_for_duckdb(statement).sql(dialect="duckdb")
    # A bare DECIMAL in DuckDB is DECIMAL(18, 3) and would round 0.123456789 to 0.123.
    assert "DECIMAL(38, 9)" in duckdb_sql


def test_duckdb_rewrite_drops_storage_hints() -> None:
    statement = sqlglot.parse_one(
        "create table d.t (s struct<a string not null>, b int64 not null) "
        "partition by b cluster by b options (description = 'x')",
        read="bigquery",
    )
    duckdb_sql = rewrite_for_duckdb(statement).sql(dialect="duckdb")
    assert duckdb_sql == "CREATE TABLE d.t (s STRUCT(a TEXT), b BIGINT NOT NULL)"
