"""``collector demo``: the whole path on this machine, from tracker events to the report.

It generates sample client events and starts ``collector serve`` as a child process on a
free loopback port with a fresh data folder. It posts the events with the sender of
``collector send`` and stops the server. Then it loads the server's files into DuckDB,
builds staging and marts, and writes the HTML report. The server is stopped in every case,
errors and Ctrl-C included.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx

from collector.sender import SendResult, send_file
from collector.warehouse.loader import LoadResult, default_database, load_events
from collector.warehouse.report import Table, write_report
from collector.warehouse.runner import DuckDBTarget, RunOptions, connect_duckdb, run_pipeline
from collector.warehouse.samples import SampleConfig, generate

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
# The development key line that ``collector serve`` prints, indented, after its heading.
_KEY_LINE = re.compile(r"^\s+(\S+)\s*$")


class DemoError(Exception):
    """The demo collector did not start or did not accept the events."""


@dataclass(frozen=True)
class DemoResult:
    """The demo's output files and the totals of each step."""

    folder: Path
    events_file: Path
    database: Path
    report: Path
    sent: SendResult
    loaded: LoadResult
    tables: dict[str, Table]


def run_demo(
    days: int = 3,
    users: int = 30,
    port: int = 0,
    folder: Path | None = None,
    seed: int = 7,
) -> DemoResult:
    """Run every step and return where the report is. Blocks until the report is written."""
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="collector-demo-"))
    data_dir = folder / "data"
    events_file = folder / "sample_client_events.ndjson"
    end = datetime.now(UTC).replace(microsecond=0)
    lines = generate(SampleConfig(end=end, users=users, days=days, seed=seed), "client")
    folder.mkdir(parents=True, exist_ok=True)
    events_file.write_bytes(b"".join(line + b"\n" for line in lines))

    port = port or free_port()
    # The oldest sample events are ``days`` old when sent; the collector's limit must allow it.
    limits = {"COLLECTOR_MAX_PAST_DAYS": str(days + 1)}
    with CollectorProcess(data_dir, port, folder / "collector.log", limits) as server:
        sent = send_file(events_file, url=f"{server.url}/collect", key=server.key, progress=False)
    if sent.failed or sent.accepted == 0:
        raise DemoError(
            f"the collector accepted {sent.accepted} events, rejected {sent.rejected}, "
            f"failed {sent.failed}; see {folder / 'collector.log'}"
        )

    database = default_database(data_dir)
    loaded = load_events(data_dir, database)
    connection = connect_duckdb(database)
    try:
        run_pipeline(DuckDBTarget(connection), RunOptions(full_refresh=True))
    finally:
        connection.close()
    report = folder / "report.html"
    tables = write_report(database, report)
    return DemoResult(folder, events_file, database, report, sent, loaded, tables)


def free_port() -> int:
    """Return a loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class CollectorProcess:
    """``python -m collector.cli serve`` as a child process, for a ``with`` block.

    ``settings`` adds ``COLLECTOR_*`` variables to the child's environment, which otherwise
    has none from this process. Entering starts it with a fresh data folder, reads the
    development key that it prints and waits until ``/readyz`` returns 200. Leaving sends
    SIGTERM, waits for the process to exit and kills it if it has not exited after
    ``STOP_TIMEOUT_SECONDS``.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        log_file: Path,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.log_file = log_file
        self.settings = settings or {}
        self.url = f"http://127.0.0.1:{port}"
        self.key = ""
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def __enter__(self) -> CollectorProcess:
        try:
            self._start()
            self.key = self._read_key()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("w") as log_handle:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "collector.cli",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self._environment(),
                cwd=self.data_dir,
                stdout=subprocess.PIPE,
                stderr=log_handle,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        reader = threading.Thread(target=self._read_stdout, args=(self._process.stdout,))
        reader.daemon = True
        reader.start()

    def _environment(self) -> dict[str, str]:
        environment = {
            name: value for name, value in os.environ.items() if not name.startswith("COLLECTOR_")
        }
        package_root = str(Path(__file__).resolve().parents[2])
        python_path = environment.get("PYTHONPATH")
        environment["PYTHONPATH"] = (
            package_root if not python_path else os.pathsep.join([package_root, python_path])
        )
        environment.update(
            COLLECTOR_DATA_DIR=str(self.data_dir),
            COLLECTOR_SINK="local",
            # The demo posts all of its events at once, from one address.
            COLLECTOR_IP_RATE_LIMIT="1000000/minute",
            COLLECTOR_LOG_LEVEL="WARNING",
        )
        environment.update(self.settings)
        return environment

    def _read_stdout(self, stream: IO[str] | None) -> None:
        if stream is None:
            return
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def _read_key(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        heading_seen = False
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                raise DemoError(
                    f"the collector exited before printing its key; see {self.log_file}"
                )
            if "development API key" in line:
                heading_seen = True
                continue
            match = _KEY_LINE.match(line)
            if heading_seen and match:
                return match.group(1)
        raise DemoError(f"the collector printed no key within {START_TIMEOUT_SECONDS:.0f} s")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise DemoError(f"the collector exited early; see {self.log_file}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise DemoError(f"the collector was not ready within {START_TIMEOUT_SECONDS:.0f} s")

    def stop(self) -> None:
        """Stop the process: SIGTERM, wait, then SIGKILL if it is still running."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning(
                "collector did not stop after SIGTERM; killing it", extra={"pid": process.pid}
            )
            process.kill()
            process.wait()
