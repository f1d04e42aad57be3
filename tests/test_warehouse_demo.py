"""``collector demo`` end to end: a real collector process on loopback, DuckDB and the report."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import orjson
import pytest

from collector.cli import main
from collector.warehouse.demo import CollectorProcess, free_port, run_demo
from collector.warehouse.runner import connect_duckdb


def port_is_closed(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.timeout(90)
def test_demo_runs_every_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "demo"
    port = free_port()

    code = main(
        ["demo", "--folder", str(folder), "--port", str(port), "--users", "10", "--days", "2"]
    )

    printed = capsys.readouterr().out
    assert code == 0, printed
    sent = len((folder / "sample_client_events.ndjson").read_bytes().splitlines())
    assert f"sent {sent} events (rejected 0)" in printed
    assert printed.rstrip().splitlines()[-2] == f"report: {folder / 'report.html'}"
    # The server is gone once the demo returns.
    assert port_is_closed(port)

    # Every posted event went through the collector's local sink into raw and staging.
    event_files = list((folder / "data" / "events").glob("*.ndjson"))
    assert event_files
    connection = connect_duckdb(folder / "data" / "warehouse.duckdb")
    try:
        assert connection.execute("SELECT count(*) FROM raw.book_media_events").fetchone() == (
            sent,
        )
        assert connection.execute("SELECT count(*) FROM staging.stg_events").fetchone() == (sent,)
        key_ids = connection.execute("SELECT DISTINCT key_id FROM raw.book_media_events").fetchall()
    finally:
        connection.close()
    assert key_ids == [("dev",)]
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert html.count("<svg") >= 3


def test_collector_process_is_stopped_when_the_block_fails(tmp_path: Path) -> None:
    port = free_port()
    process = None
    server = CollectorProcess(tmp_path / "data", port, tmp_path / "collector.log")
    with pytest.raises(RuntimeError, match="boom"), server:
        process = server._process
        assert server.key
        response = httpx.post(
            f"{server.url}/collect",
            headers={"X-API-Key": server.key},
            content=orjson.dumps({"not": "an event"}),
        )
        assert response.status_code == 422  # the server is up: one event, and it is invalid
        raise RuntimeError("boom")
    assert process is not None
    assert process.poll() is not None
    assert port_is_closed(port)


@pytest.mark.timeout(90)
def test_demo_accepts_more_days_than_default_limit(tmp_path: Path) -> None:
    # The collector rejects events older than 30 days unless the demo raises the limit.
    result = run_demo(days=35, users=3, folder=tmp_path / "demo")

    assert result.sent.rejected == 0
    assert result.sent.failed == 0
    assert result.loaded.rows_loaded == result.sent.accepted
