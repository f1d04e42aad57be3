"""Bounded event traffic against a collector, retrying failed batches like a client does."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

import httpx
import orjson

from tests.conftest import make_event

EVENT_NAMES = ("page_turned", "book_opened", "audio_played", "session_start", "video_paused")
# Statuses after which a client sends the same events again: a transport error (0), a body
# timeout, a rate limit and an unavailable sink.
RETRYABLE_STATUSES = frozenset({0, 408, 429, 503})


@dataclass(slots=True, frozen=True)
class Outcome:
    """One POST /collect: its event ids, status (0 for a transport error) and timing.

    ``started`` and ``finished`` are time.monotonic() values. ``attempt`` is 1 for the first
    send of a batch and counts up on each retry with the same event ids.
    """

    event_ids: tuple[str, ...]
    status: int
    retry_after: str | None
    started: float
    finished: float
    attempt: int

    @property
    def seconds(self) -> float:
        return self.finished - self.started


class Load:
    """Post batches of valid events from ``threads`` threads until stopped.

    After a retryable status the thread pauses ``pause_after_failure`` seconds and sends the
    same events again, at most ``retries`` more times, so the sink can receive a copy of an
    event twice and staging must keep one. Each thread stops after
    ``max_requests_per_thread`` requests or when ``stop()`` is called.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        threads: int = 3,
        events_per_request: int = 5,
        max_requests_per_thread: int = 3000,
        retries: int = 2,
        pause_after_failure: float = 0.05,
        pause_between_requests: float = 0.0,
        request_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.key = key
        self.events_per_request = events_per_request
        self.max_requests_per_thread = max_requests_per_thread
        self.retries = retries
        self.pause_after_failure = pause_after_failure
        self.pause_between_requests = pause_between_requests
        self.request_timeout = request_timeout
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = [
            threading.Thread(target=self._run, args=(index,), name=f"load-{index}", daemon=True)
            for index in range(threads)
        ]

    def start(self) -> Load:
        for worker in self._workers:
            worker.start()
        return self

    def stop(self, timeout: float = 15.0) -> list[Outcome]:
        """Stop the threads, wait for their last request, and return every outcome."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        alive = [worker.name for worker in self._workers if worker.is_alive()]
        assert not alive, f"load threads still running {timeout} s after stop(): {alive}"
        return self.outcomes

    @property
    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return list(self._outcomes)

    def acknowledged(self) -> set[str]:
        """Return the event ids of every request that got a 200."""
        return {
            event_id
            for outcome in self.outcomes
            if outcome.status == 200
            for event_id in outcome.event_ids
        }

    def statuses(self) -> collections.Counter[int]:
        return collections.Counter(outcome.status for outcome in self.outcomes)

    def started_between(self, start: float, end: float) -> list[Outcome]:
        """Return the outcomes of requests sent at or after ``start`` and before ``end``."""
        return [outcome for outcome in self.outcomes if start <= outcome.started < end]

    def _run(self, index: int) -> None:
        headers = {"Content-Type": "application/json", "X-API-Key": self.key}
        events: list[dict] | None = None
        attempt = 0
        with httpx.Client(timeout=self.request_timeout, trust_env=False) as client:
            for number in range(self.max_requests_per_thread):
                if self._stop.is_set():
                    return
                if events is None:
                    events = [
                        make_event(EVENT_NAMES[(index + number + offset) % len(EVENT_NAMES)])
                        for offset in range(self.events_per_request)
                    ]
                    attempt = 0
                attempt += 1
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
                    tuple(event["event_id"] for event in events),
                    status,
                    retry_after,
                    started,
                    time.monotonic(),
                    attempt,
                )
                with self._lock:
                    self._outcomes.append(outcome)
                if status not in RETRYABLE_STATUSES or attempt > self.retries:
                    events = None
                if status != 200:
                    self._stop.wait(self.pause_after_failure)
                elif self.pause_between_requests:
                    self._stop.wait(self.pause_between_requests)
