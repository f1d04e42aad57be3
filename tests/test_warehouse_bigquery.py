"""The BigQuery target of the runner, with a fake client at the network seam.

No test here reaches Google: the fake replaces google.cloud.bigquery.Client and records
what the runner requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from google.api_core.exceptions import BadRequest, NotFound
from google.cloud import bigquery

from collector.warehouse.runner import (
    FULL_REFRESH_START,
    BigQueryTarget,
    RunOptions,
    WarehouseError,
    run_pipeline,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FakeJob:
    error: Exception | None = None

    def result(self) -> None:
        if self.error is not None:
            raise self.error


@dataclass
class FakeClient:
    """Records calls the way google.cloud.bigquery.Client would receive them."""

    project: str = "demo-project"
    tables: set[str] = field(default_factory=set)
    queries: list[tuple[str, Any, str | None]] = field(default_factory=list)
    datasets: list[tuple[str, str | None]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    fail_on: str | None = None

    def create_dataset(self, dataset: bigquery.Dataset, exists_ok: bool = False) -> None:
        assert exists_ok
        self.datasets.append((dataset.dataset_id, dataset.location))

    def get_table(self, table: str) -> object:
        if table not in self.tables:
            raise NotFound(f"table {table}")
        return object()

    def delete_table(self, table: str, not_found_ok: bool = False) -> None:
        assert not_found_ok
        self.deleted.append(table)

    def query(self, text: str, job_config: Any = None, location: str | None = None) -> FakeJob:
        self.queries.append((text, job_config, location))
        if self.fail_on is not None and self.fail_on in text:
            return FakeJob(BadRequest("Syntax error: Unexpected keyword"))
        return FakeJob()


def parameters(job_config: bigquery.QueryJobConfig) -> list[tuple[str, str, Any]]:
    return [(p.name, p.type_, p.value) for p in job_config.query_parameters]


def test_bigquery_runs_each_file_unchanged_with_date_parameter() -> None:
    client = FakeClient(
        tables={
            f"demo-project.{name}"
            for name in (
                "staging.stg_events",
                "marts.daily_active_users",
                "marts.content_completion",
                "marts.revenue_daily",
            )
        }
    )
    target = BigQueryTarget("demo-project", "EU", client=client)  # type: ignore[arg-type]

    results = run_pipeline(target, RunOptions(as_of=date(2026, 3, 4), lookback_days=2))

    assert client.datasets == [("marts", "EU"), ("raw", "EU"), ("staging", "EU")]
    assert client.deleted == []
    texts = [text for text, _, _ in client.queries]
    files = [result.path for result in results]
    assert texts == [path.read_text(encoding="utf-8") for path in files]
    assert all(location == "EU" for _, _, location in client.queries)
    staging_config = client.queries[1][1]
    assert parameters(staging_config) == [("window_start", "DATE", date(2026, 3, 2))]
    # Files without @window_start get no parameters.
    assert parameters(client.queries[0][1]) == []
    assert [result.mode for result in results] == ["create"] + ["incremental"] * 4


def test_bigquery_first_run_rebuilds_missing_tables() -> None:
    client = FakeClient()
    target = BigQueryTarget("demo-project", "US", client=client)  # type: ignore[arg-type]

    results = run_pipeline(target, RunOptions())

    assert client.deleted == [f"demo-project.{result.target}" for result in results[1:]]
    assert parameters(client.queries[1][1]) == [("window_start", "DATE", FULL_REFRESH_START)]


def test_bigquery_error_names_the_file() -> None:
    client = FakeClient(fail_on="marts.revenue_daily")
    target = BigQueryTarget("demo-project", "US", client=client)  # type: ignore[arg-type]

    with pytest.raises(WarehouseError, match=r"create_revenue_daily\.sql failed on BigQuery: 400"):
        run_pipeline(target, RunOptions(full_refresh=True))
