"""The ``collector warehouse load`` and ``collector warehouse run`` commands."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from collector.cli import main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "warehouse" / "events.ndjson"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    (folder / "events").mkdir(parents=True)
    shutil.copy(FIXTURE, folder / "events" / "events-fixture.ndjson")
    monkeypatch.setenv("COLLECTOR_DATA_DIR", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


def test_load_and_run_use_collector_data_dir(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["warehouse", "load"]) == 0
    assert main(["warehouse", "load"]) == 0
    printed = capsys.readouterr().out.splitlines()
    database = data_dir / "warehouse.duckdb"
    assert printed == [
        f"loaded 30 new rows from 1 files into {database} (30 read, 0 bad lines skipped)",
        f"loaded 0 new rows from 1 files into {database} (0 read, 0 bad lines skipped)",
    ]

    assert main(["warehouse", "run", "--as-of", "2026-03-04"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:5]] == [
        ["raw.book_media_events", "create"],
        ["staging.stg_events", "full"],
        ["marts.content_completion", "full"],
        ["marts.daily_active_users", "full"],
        ["marts.revenue_daily", "full"],
    ]
    assert lines[5] == f"ran 5 files on {database}"

    assert main(["warehouse", "run", "--as-of", "2026-03-04", "--lookback-days", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["staging.stg_events", "incremental"]


def test_run_with_explicit_database(tmp_path: Path, data_dir: Path) -> None:
    database = tmp_path / "elsewhere" / "wh.duckdb"
    assert main(["warehouse", "load", "--database", str(database)]) == 0
    assert main(["warehouse", "run", "--database", str(database), "--full-refresh"]) == 0
    assert database.exists()
    assert not (data_dir / "warehouse.duckdb").exists()


def test_run_rejects_negative_lookback(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["warehouse", "run", "--lookback-days", "-1"]) == 2
    assert capsys.readouterr().err == "collector: lookback_days must be >= 0, got -1\n"


def test_run_reports_missing_sql_folder(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-sql"
    assert main(["warehouse", "run", "--sql-dir", str(missing)]) == 1
    assert capsys.readouterr().err == (
        f"collector: SQL folder {missing} not found; pass --sql-dir with the bigquery/ folder\n"
    )


def test_run_reports_failing_statement(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(Path(__file__).resolve().parents[1] / "bigquery", sql_dir)
    (sql_dir / "marts" / "create_broken.sql").write_text(
        "create or replace table marts.broken as select no_such_column from staging.stg_events"
    )
    assert main(["warehouse", "run", "--sql-dir", str(sql_dir)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("collector: create_broken.sql failed on DuckDB: Binder Error")


def test_warehouse_without_subcommand_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["warehouse"]) == 2
    assert "usage: collector" in capsys.readouterr().out
