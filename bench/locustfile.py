"""Locust load test for a deployed collector, with requests shaped like the browser tracker's.

Each simulated reader opens a book and turns pages. Every few seconds it sends a batch
``{"sent_at": ..., "events": [...]}`` of up to 20 events with fresh event ids and times, as
the tracker does with fetch and ``X-API-Key``. Now and then it leaves the page, and sends the
rest of its queue as the tracker's beacon does: ``text/plain`` to ``/collect?key=KEY``.

Locust is not a dependency of the project; install it with ``pip install locust``. Use a
browser key (a server key is rejected in the query string):

    COLLECTOR_LOAD_KEY=pk_... locust -f bench/locustfile.py --host https://collector.example.com

``COLLECTOR_LOAD_ORIGIN`` (optional) is sent as the Origin header, which must then be one of
the key's origins. A response counts as a failure unless it is 200 with no rejected event.
"""

from __future__ import annotations

import json
import logging
import os
import random
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from locust import HttpUser, between, events, task

KEY_ENV = "COLLECTOR_LOAD_KEY"
ORIGIN_ENV = "COLLECTOR_LOAD_ORIGIN"
# The tracker's defaults: a batch contains at most 20 events, flushed every 5 seconds.
BATCH_SIZE = 20
BOOKS = [
    {"content_id": f"book-{number}", "content_type": "book", "page_count": pages}
    for number, pages in ((1001, 320), (1002, 612), (1003, 88), (1004, 1024))
]
USER_AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
]


@events.test_start.add_listener
def _require_key(environment, **_kwargs: object) -> None:
    if not os.environ.get(KEY_ENV):
        logging.error("%s is not set; set it to a browser API key of the collector", KEY_ENV)
        environment.process_exit_code = 2
        environment.runner.quit()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Reader(HttpUser):
    """One browser tab of a reader: a session, a book and a queue of unsent events."""

    wait_time = between(1, 5)

    def on_start(self) -> None:
        self.key = os.environ[KEY_ENV]
        self.headers = {"Content-Type": "application/json", "X-API-Key": self.key}
        self.beacon_headers = {"Content-Type": "text/plain;charset=UTF-8"}
        origin = os.environ.get(ORIGIN_ENV)
        agent = random.choice(USER_AGENTS)
        for headers in (self.headers, self.beacon_headers):
            headers["User-Agent"] = agent
            if origin:
                headers["Origin"] = origin
        self.anonymous_id = f"anon-{uuid.uuid4().hex[:16]}"
        self.queue: list[dict[str, object]] = []
        self._open_book()

    def _open_book(self) -> None:
        self.session_id = f"session-{uuid.uuid4().hex[:16]}"
        self.book = random.choice(BOOKS)
        self.page = random.randint(1, self.book["page_count"] - 1)  # type: ignore[operator]
        self._enqueue("session_start", None, {})
        self._enqueue("book_opened", self.book, {"format": "epub", "resume_page": self.page})

    def _enqueue(
        self, name: str, content: dict[str, object] | None, properties: dict[str, object]
    ) -> None:
        event: dict[str, object] = {
            "event_id": str(uuid.uuid4()),
            "event_name": name,
            "occurred_at": _iso(datetime.now(UTC) - timedelta(milliseconds=random.randint(0, 900))),
            "anonymous_id": self.anonymous_id,
            "session_id": self.session_id,
            "context": {
                "page_url": f"https://reader.example/read/{self.book['content_id']}",
                "platform": "web",
                "locale": "en-US",
            },
            "properties": properties,
        }
        if content is not None:
            event["content"] = content
        self.queue.append(event)

    def _take_batch(self) -> str:
        batch, self.queue = self.queue[:BATCH_SIZE], self.queue[BATCH_SIZE:]
        return json.dumps({"sent_at": _iso(datetime.now(UTC)), "events": batch})

    def _check(self, response, name: str) -> None:
        if response.status_code != 200:
            response.failure(f"{name}: HTTP {response.status_code}: {response.text[:200]}")
            return
        try:
            rejected = response.json().get("rejected") or []
        except ValueError:
            response.failure(f"{name}: the response is not JSON: {response.text[:200]}")
            return
        if rejected:
            response.failure(f"{name}: {len(rejected)} events rejected: {rejected[0]}")

    @task(9)
    def read_and_flush(self) -> None:
        """Turn a few pages, then send the queue with fetch, as the flush timer does."""
        page_count = self.book["page_count"]
        for _ in range(random.randint(1, 8)):
            if self.page >= page_count:  # type: ignore[operator]
                break
            self.page += 1
            properties = {
                "page_number": self.page,
                "page_count": page_count,
                "direction": "forward",
                "seconds_on_page": round(random.uniform(5, 90), 1),
            }
            self._enqueue("page_turned", self.book, properties)
        while self.queue:
            body = self._take_batch()
            with self.client.post(
                "/collect", data=body, headers=self.headers, name="/collect", catch_response=True
            ) as response:
                self._check(response, "fetch")

    @task(1)
    def leave_page(self) -> None:
        """Send the queue as a beacon on page hide, then open the next book."""
        self._enqueue("session_end", None, {"duration_seconds": round(random.uniform(60, 3600), 1)})
        url = f"/collect?key={quote(self.key, safe='')}"
        while self.queue:
            with self.client.post(
                url,
                data=self._take_batch(),
                headers=self.beacon_headers,
                name="/collect?key= (beacon)",
                catch_response=True,
            ) as response:
                self._check(response, "beacon")
        self._open_book()
