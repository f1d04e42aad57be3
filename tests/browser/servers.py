"""Real processes for the browser tests: the demo site's static server and the collector."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
SITE_DIR = ROOT / "examples" / "site"

Row = dict[str, Any]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_listening(
    process: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited at start-up:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s:\n{log_path.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class SiteServer:
    """``python -m http.server`` serving ``directory``, examples/site by default.

    sdk/README.md documents this command for serving the demo site.
    """

    def __init__(self, work_dir: Path, directory: Path = SITE_DIR) -> None:
        self.directory = directory
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.log_path = work_dir / "site.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SiteServer:
        command = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]
        command += ["--directory", str(self.directory), str(self.port)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _wait_until_listening(self.process, self.port, self.log_path, 10)
        return self

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def demo_url(self, endpoint: str, key: str, **options: Any) -> str:
        """Return the demo page URL that makes it send to ``endpoint`` with ``options``."""
        query = {"endpoint": endpoint, "key": key, "options": json.dumps(options)}
        return f"{self.origin}/index.html?{urlencode(query)}"


class CollectorServer:
    """``python -m collector.cli serve`` with its own data folder and keys file."""

    def __init__(self, work_dir: Path, keys_file: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.collect_url = self.url + "/collect"
        self.data_dir = work_dir / "data"
        self.work_dir = work_dir
        self.keys_file = keys_file
        self.log_path = work_dir / "collector.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CollectorServer:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "COLLECTOR_DATA_DIR": str(self.data_dir),
            "COLLECTOR_KEYS_FILE": str(self.keys_file),
        }
        command = [sys.executable, "-m", "collector.cli", "serve"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            # The work folder as cwd keeps a developer's .env out of the test.
            self.process = subprocess.Popen(
                command, env=env, cwd=self.work_dir, stdout=log, stderr=subprocess.STDOUT
            )
        _wait_until_listening(self.process, self.port, self.log_path, 20)
        return self

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def rows(self) -> list[Row]:
        """Return every stored row; a line still being written is skipped."""
        rows = []
        for path in sorted((self.data_dir / "events").glob("*.ndjson")):
            for line in path.read_bytes().splitlines(keepends=True):
                if line.endswith(b"\n") and line.strip():
                    rows.append(json.loads(line))
        return rows

    def rows_of(self, anonymous_id: str) -> list[Row]:
        return [row for row in self.rows() if row["anonymous_id"] == anonymous_id]

    def wait_for_rows(
        self, anonymous_id: str, done: Callable[[list[Row]], bool], timeout: float = 15
    ) -> list[Row]:
        """Poll the stored rows of ``anonymous_id`` until ``done(rows)`` or the timeout."""
        deadline = time.monotonic() + timeout
        rows = self.rows_of(anonymous_id)
        while not done(rows) and time.monotonic() < deadline:
            time.sleep(0.1)
            rows = self.rows_of(anonymous_id)
        return rows

    def metric(self, name: str, **labels: str) -> float:
        """Return one sample of the collector's /metrics, or 0 when it is absent."""
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=5) as response:
                text = response.read().decode()
        except urllib.error.URLError as exc:
            raise RuntimeError(f"GET {self.url}/metrics failed: {exc}") from None
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            series, value = line.rsplit(" ", 1)
            metric, _, label_text = series.partition("{")
            present = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
            if metric == name and present == wanted:
                return float(value)
        return 0.0


def names(rows: list[Row]) -> list[str]:
    return [row["event_name"] for row in rows]


def count_names(*expected: str) -> Callable[[list[Row]], bool]:
    """Return a predicate true once the rows contain at least ``expected`` (with repeats)."""

    def done(rows: list[Row]) -> bool:
        present = names(rows)
        return all(present.count(name) >= expected.count(name) for name in set(expected))

    return done
