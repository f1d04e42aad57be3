"""Commands ``warehouse load``, ``warehouse run``, ``report`` and ``demo`` of ``collector``."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any

from collector.settings import load_settings


def add_commands(commands: Any) -> None:
    """Add the warehouse commands to the ``collector`` subparsers object ``commands``."""
    warehouse = commands.add_parser(
        "warehouse", help="load local events into DuckDB and build staging and marts"
    )
    warehouse_commands = warehouse.add_subparsers(title="warehouse commands")

    load = warehouse_commands.add_parser(
        "load", help="load <data-dir>/events/*.ndjson into raw.book_media_events"
    )
    _add_data_options(load)
    load.set_defaults(run=_load)

    run = warehouse_commands.add_parser(
        "run", help="run the SQL in bigquery/ (raw, staging, marts) on DuckDB or BigQuery"
    )
    run.add_argument("--target", choices=["duckdb", "bigquery"], default="duckdb")
    run.add_argument(
        "--full-refresh", action="store_true", help="drop and rebuild staging and marts"
    )
    run.add_argument(
        "--lookback-days",
        type=int,
        default=3,
        help="days of raw partitions an incremental run rebuilds (default 3)",
    )
    run.add_argument(
        "--as-of",
        type=date.fromisoformat,
        help="UTC date the incremental window ends on, YYYY-MM-DD (default today)",
    )
    run.add_argument(
        "--project",
        help="BigQuery project (default COLLECTOR_BIGQUERY_PROJECT, then the client's default)",
    )
    run.add_argument(
        "--location",
        help="BigQuery location, such as EU or US (default COLLECTOR_BIGQUERY_LOCATION or US)",
    )
    run.add_argument("--sql-dir", type=Path, help="folder with raw/, staging/, marts/ SQL")
    _add_data_options(run)
    run.set_defaults(run=_run)

    report = commands.add_parser("report", help="print the marts and write an HTML report")
    _add_data_options(report)
    report.add_argument(
        "--output", type=Path, help="HTML file to write (default <data-dir>/report.html)"
    )
    report.set_defaults(run=_report)

    demo = commands.add_parser(
        "demo", help="send sample events through a local collector and build the report"
    )
    demo.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    demo.add_argument("--days", type=int, default=3, help="days of sample activity (default 3)")
    demo.add_argument("--users", type=_positive, default=30, help="sample users (default 30)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument("--folder", type=Path, help="where to write (default: a new temp folder)")
    demo.set_defaults(run=_demo)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, help="collector data folder (default COLLECTOR_DATA_DIR or data)"
    )
    parser.add_argument(
        "--database", type=Path, help="DuckDB file (default <data-dir>/warehouse.duckdb)"
    )


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        return Path(args.data_dir)
    return load_settings().data_dir


def _database(args: argparse.Namespace) -> Path:
    from collector.warehouse.loader import default_database

    return args.database if args.database is not None else default_database(_data_dir(args))


def _load(args: argparse.Namespace) -> int:
    from collector.warehouse.loader import load_events

    data_dir = _data_dir(args)
    database = _database(args)
    result = load_events(data_dir, database)
    print(
        f"loaded {result.rows_loaded} new rows from {result.files} files into {database} "
        f"({result.rows_read} read, {result.bad_lines} bad lines skipped)"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from collector.warehouse.runner import (
        BigQueryTarget,
        DuckDBTarget,
        RunOptions,
        Target,
        WarehouseError,
        connect_duckdb,
        run_pipeline,
    )
    from collector.warehouse.sqlfiles import SqlFileError

    try:
        options = RunOptions(
            full_refresh=args.full_refresh, lookback_days=args.lookback_days, as_of=args.as_of
        )
    except ValueError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    connection = None
    target: Target
    if args.target == "bigquery":
        project, location = _bigquery_location(args)
        target = BigQueryTarget(project, location)
        where = f"BigQuery project {project or '(client default)'}"
    else:
        database = _database(args)
        connection = connect_duckdb(database)
        target = DuckDBTarget(connection)
        where = str(database)
    try:
        results = run_pipeline(target, options, args.sql_dir)
    except (WarehouseError, SqlFileError) as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 1
    finally:
        if connection is not None:
            connection.close()
    for result in results:
        print(f"{result.target:<28} {result.mode:<13} {result.seconds:6.2f} s  {result.path.name}")
    print(f"ran {len(results)} files on {where}")
    return 0


def _bigquery_location(args: argparse.Namespace) -> tuple[str | None, str | None]:
    settings = load_settings()
    return args.project or settings.bigquery_project, args.location or settings.bigquery_location


def _report(args: argparse.Namespace) -> int:
    from collector.warehouse.report import ReportError, terminal_table, write_report

    database = _database(args)
    output = args.output if args.output is not None else _data_dir(args) / "report.html"
    try:
        tables = write_report(database, output)
    except ReportError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 1
    for table in tables.values():
        print(terminal_table(table))
        print()
    print(f"wrote {output}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from collector.warehouse.demo import DemoError, run_demo
    from collector.warehouse.report import terminal_table

    print("sending sample events through a local collector...", flush=True)
    try:
        result = run_demo(
            days=args.days, users=args.users, port=args.port, folder=args.folder, seed=args.seed
        )
    except DemoError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 1
    print(
        f"sent {result.sent.accepted} events (rejected {result.sent.rejected}), "
        f"loaded {result.loaded.rows_loaded} rows into {result.database}\n"
    )
    for table in result.tables.values():
        print(terminal_table(table))
        print()
    print(f"report: {result.report}")
    print(f"open it with: xdg-open {result.report}  (or your browser's File > Open)")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
