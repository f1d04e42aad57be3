"""A bounded HTTP load against a collector process, recording every response."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from tests.conftest import make_event

EVENT_NAMES = ("page_turned", "book_opened", "audio_played", "session_start")


@dataclass(slots=True)
class Outcome:
    """One POST /collect: its event ids, status (0 for a transport error) and timing."""

    event_ids: list[str]
    status: int
    retry_after: str | None
    started: float
    finished: float


@dataclass
class Load:
    """POST small batches of valid events from ``threads`` threads until stopped.

    Each thread stops after ``max_requests_per_thread`` requests, when ``stop()`` is called,
    or, with ``stop_on_transport_error``, at its first connection error. After a 503 a
    thread pauses for ``pause_after_503`` seconds instead of the Retry-After value, so the
    test covers an outage with many requests.
    """

    url: str
    key: str
    threads: int = 6
    events_per_request: int = 2
    max_requests_per_thread: int = 800
    pause_after_503: float = 0.02
    stop_on_transport_error: bool = False
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._run, name=f"load-{index}", daemon=True)
            for index in range(self.threads)
        ]

    def start(self) -> Load:
        for worker in self._workers:
            worker.start()
        return self

    def stop(self, timeout: float = 15.0) -> list[Outcome]:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout)
        alive = [worker.name for worker in self._workers if worker.is_alive()]
        assert not alive, f"load threads still running after {timeout} s: {alive}"
        return self.outcomes

    def wait(self, timeout: float) -> list[Outcome]:
        """Wait for the threads to end on their own, then return every outcome."""
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return self.stop()

    def _run(self) -> None:
        headers = {"Content-Type": "application/json", "X-API-Key": self.key}
        with httpx.Client(timeout=15.0, trust_env=False) as client:
            for index in range(self.max_requests_per_thread):
                if self._stop.is_set():
                    return
                events = [
                    make_event(EVENT_NAMES[(index + offset) % len(EVENT_NAMES)])
                    for offset in range(self.events_per_request)
                ]
                started = time.monotonic()
                try:
                    response = client.post(
                        self.url + "/collect", content=orjson.dumps(events), headers=headers
                    )
                    status = response.status_code
                    retry_after = response.headers.get("retry-after")
                except httpx.TransportError:
                    status, retry_after = 0, None
                outcome = Outcome(
                    [event["event_id"] for event in events],
                    status,
                    retry_after,
                    started,
                    time.monotonic(),
                )
                with self._lock:
                    self.outcomes.append(outcome)
                if status == 0 and self.stop_on_transport_error:
                    return
                if status != 200:
                    time.sleep(self.pause_after_503)


def rss_bytes(pid: int) -> int:
    """Return the resident set size of process ``pid``, read from /proc (Linux only)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status")
