"""Shared fixtures: valid events of every kind, keys files, and real collector processes."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from collector.keys import add_key

ROOT = Path(__file__).resolve().parent.parent
SITE_ORIGIN = "https://site.example"


def now_iso(offset_seconds: float = 0) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=offset_seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_BOOK = {"content_id": "book-1", "content_type": "book", "title": "Moby-Dick", "page_count": 600}
_AUDIO = {"content_id": "audio-1", "content_type": "audio", "duration_seconds": 3600}
_VIDEO = {"content_id": "video-1", "content_type": "video", "duration_seconds": 600}

# One valid example per event name: (content, properties).
EXAMPLES: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]] = {
    "session_start": (None, {}),
    "session_end": (None, {"duration_seconds": 300.5}),
    "book_opened": (_BOOK, {"format": "epub", "resume_page": 12}),
    "page_turned": (_BOOK, {"page_number": 13, "page_count": 600, "direction": "forward"}),
    "audio_played": (_AUDIO, {"position_seconds": 0, "duration_seconds": 3600}),
    "audio_paused": (
        _AUDIO,
        {"position_seconds": 125.5, "duration_seconds": 3600, "playback_rate": 1.5},
    ),
    "video_played": (_VIDEO, {"position_seconds": 0, "duration_seconds": 600, "quality": "720p"}),
    "video_paused": (_VIDEO, {"position_seconds": 590, "duration_seconds": 600}),
    "chapter_completed": (_BOOK, {"chapter_index": 3, "chapter_count": 12}),
    "purchase": (
        None,
        {"order_id": "o-1", "product_type": "subscription", "amount": "9.99", "currency": "EUR"},
    ),
}


def make_event(name: str = "page_turned", **overrides: Any) -> dict[str, Any]:
    """Return a valid client event of kind ``name``; keyword arguments replace fields."""
    content, properties = EXAMPLES[name]
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_name": name,
        "occurred_at": now_iso(-1),
        "anonymous_id": "anon-1",
        "session_id": "session-1",
        "context": {"page_url": "https://site.example/read", "platform": "web"},
        "properties": copy.deepcopy(properties),
    }
    if content is not None:
        event["content"] = copy.deepcopy(content)
    event.update(overrides)
    return event


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Keys:
    """A keys file with a browser key for SITE_ORIGIN and a server key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.browser = add_key(path, "web", "browser", [SITE_ORIGIN, "https://*.example.org"])
        self.server = add_key(path, "backend", "server", [])


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys.json")


class CollectorProcess:
    """A real ``collector serve`` process on a loopback port."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "COLLECTOR_DATA_DIR": str(data_dir),
            "COLLECTOR_PORT": str(self.port),
            "COLLECTOR_HOST": "127.0.0.1",
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        self.log_path = data_dir.parent / f"collector-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> CollectorProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "serve"],
            env=self.env,
            cwd=self.data_dir.parent,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"collector exited at start-up:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"collector did not start in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)
        finally:
            self._log.close()

    def stored_rows(self) -> list[dict[str, Any]]:
        return read_rows(self.data_dir)


def read_rows(data_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted((data_dir / "events").glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                rows.append(orjson.loads(line))
    return rows


@pytest.fixture
def start_collector(tmp_path: Path) -> Iterator[Any]:
    """Start collector processes; every one is stopped at the end of the test."""
    started: list[CollectorProcess] = []

    def start(env: dict[str, str] | None = None, data_dir: Path | None = None) -> CollectorProcess:
        folder = data_dir or tmp_path / f"data-{len(started)}"
        process = CollectorProcess(folder, env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(signal.SIGKILL)


@pytest.fixture
def collector(start_collector: Any, keys: Keys) -> CollectorProcess:
    return start_collector({"COLLECTOR_KEYS_FILE": str(keys.path)})
