"""Soak the collector: mixed traffic for many minutes with faults injected on a schedule.

Run from the repository root, with redis-server installed:

    python tests/soak.py --minutes 30 --sink pubsub --report docs/soak.md

The script starts, on 127.0.0.1 only, a redis-server for the rate limits, the Pub/Sub test
server in its own process (with ``--sink pubsub``) and one ``collector serve`` process.
Worker threads send ``--rate`` requests per second in total. The mix has valid batches, gzip
bodies, beacons, partly and wholly invalid bodies, bad keys, oversized and gzip-bomb bodies,
rate-limited requests, preflights, slow bodies and bodies cut off by a disconnect. A
client that gets 503, 408, 429 or a transport error sends the same events again, at most
twice. A fault thread restarts Redis, freezes it with SIGSTOP, and switches the Pub/Sub test
server between unavailable, slow, frozen and internal-error modes, on a fixed schedule that
repeats every ``--fault-period`` seconds. A sampler records the collector's RSS, open file
descriptors (/proc/PID/fd) and the ``collector_asyncio_tasks`` gauge.

At the end the script stops the traffic, sends SIGTERM, reads every copy that reached the
sink, loads the copies into DuckDB with collector.warehouse, and prints a report: resource
start, end and maximum with a flat verdict (docs/soak.md describes the rule), statuses
by kind of request, and acknowledged events against the sink and staging. ``--report FILE``
writes the same report into FILE between markers for the sink, replacing an earlier run of
that sink.

Exit status: 0 when every check passed. It is 1 when an acknowledged event is missing or
repeated in staging, a 5xx other than 503 was seen, the collector died, a fault step failed,
or a resource did not stay flat.

The file name does not start with ``test_``, so pytest does not collect it.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # ``python tests/soak.py`` puts tests/ first on the path, and the imports below are from
    # the repository root.
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import orjson  # noqa: E402

from collector.keys import add_key  # noqa: E402
from tests.conftest import SITE_ORIGIN, CollectorProcess, make_event, now_iso  # noqa: E402
from tests.faults.delivery import (  # noqa: E402
    SinkCopies,
    build_staging,
    compare,
    read_local_sink,
    write_pubsub_rows,
)
from tests.faults.system import (  # noqa: E402
    PubSubProcess,
    connect,
    open_fds,
    read_response,
    request_head,
    rss_bytes,
    scrape,
    status_of,
)
from tests.test_ratelimit import RedisServer  # noqa: E402

TOPIC = "projects/soak-project/topics/events"
INVALID_TOPIC = "projects/soak-project/topics/rejected-events"
EVENT_NAMES = ("page_turned", "book_opened", "audio_played", "session_start", "chapter_completed")
RETRYABLE = frozenset({0, 408, 429, 503})
# A resource is flat when its end value is at most this fraction above its start value. Counts
# that requests in flight move may also grow by one per traffic thread, because each thread
# can hold one connection and one request task at the moment of a sample. A drop is flat.
FLAT_FRACTION = 0.10
BODY_READ_TIMEOUT = 2.0
MAX_BODY_BYTES = 1024 * 1024


@dataclass
class Tally:
    """Statuses by kind of request, and the ids of acknowledged events."""

    statuses: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    acknowledged: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, status: int, acknowledged: list[str] | None = None) -> None:
        with self.lock:
            self.statuses[(kind, status)] += 1
            if acknowledged:
                self.acknowledged.update(acknowledged)


class Traffic:
    """Worker threads sending the request mix at ``rate`` requests per second in total."""

    def __init__(
        self,
        collector: CollectorProcess,
        keys: dict[str, str],
        rate: float,
        threads: int,
        deadline: float,
        seed: int,
    ) -> None:
        self.collector = collector
        self.keys = keys
        self.interval = threads / rate
        self.deadline = deadline
        self.tally = Tally()
        self.stop_event = threading.Event()
        self.kinds: list[tuple[str, float, Any]] = [
            ("json", 38, self._json),
            ("gzip", 14, self._gzip),
            ("beacon", 14, self._beacon),
            ("partial", 5, self._partial),
            ("invalid_json", 4, self._invalid_json),
            ("invalid_events", 4, self._invalid_events),
            ("bad_key", 3, self._bad_key),
            ("oversized", 2, self._oversized),
            ("too_many_events", 2, self._too_many_events),
            ("gzip_bomb", 2, self._gzip_bomb),
            ("rate_limited", 3, self._rate_limited),
            ("preflight", 3, self._preflight),
            ("slow_body", 0.5, self._slow_body),
            ("disconnect", 1, self._disconnect),
        ]
        self._workers = [
            threading.Thread(target=self._run, args=(seed + index,), name=f"soak-{index}")
            for index in range(threads)
        ]

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def join(self) -> None:
        self.stop_event.set()
        for worker in self._workers:
            worker.join(60)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        names = [kind for kind, _, _ in self.kinds]
        weights = [weight for _, weight, _ in self.kinds]
        senders = {kind: sender for kind, _, sender in self.kinds}
        next_at = time.monotonic()
        with httpx.Client(timeout=15, trust_env=False) as client:
            while not self.stop_event.is_set() and time.monotonic() < self.deadline:
                kind = rng.choices(names, weights)[0]
                try:
                    senders[kind](client, rng)
                except Exception as exc:  # noqa: BLE001 - a soak keeps going and counts it
                    self.tally.record(f"{kind} client error {type(exc).__name__}", -1)
                next_at = max(next_at + self.interval, time.monotonic() - self.interval)
                self.stop_event.wait(max(0.0, next_at - time.monotonic()))

    # Valid events, sent again after a retryable status like a client would.

    def _send_events(
        self,
        client: httpx.Client,
        kind: str,
        events: list[dict[str, Any]],
        build: Any,
        valid_ids: list[str] | None = None,
    ) -> None:
        for attempt in range(3):
            content, headers, params = build(events)
            status = self._post(client, content, headers, params)
            self.tally.record(kind if attempt == 0 else f"{kind} retry", status)
            if status == 200:
                ids = valid_ids if valid_ids is not None else [e["event_id"] for e in events]
                self.tally.record("acknowledged batches", 200, ids)
                return
            if status not in RETRYABLE or self.stop_event.is_set():
                return
            self.stop_event.wait(0.2)

    def _post(
        self,
        client: httpx.Client,
        content: Any,
        headers: dict[str, str],
        params: dict[str, str] | None = None,
    ) -> int:
        try:
            response = client.post(
                self.collector.url + "/collect", content=content, headers=headers, params=params
            )
        except httpx.TransportError:
            return 0
        return response.status_code

    def _events(self, rng: random.Random, low: int = 1, high: int = 20) -> list[dict[str, Any]]:
        return [make_event(rng.choice(EVENT_NAMES)) for _ in range(rng.randint(low, high))]

    def _server_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "X-API-Key": self.keys["server"]}

    def _json(self, client: httpx.Client, rng: random.Random) -> None:
        def build(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str], None]:
            return orjson.dumps(events), self._server_headers(), None

        self._send_events(client, "json", self._events(rng), build)

    def _gzip(self, client: httpx.Client, rng: random.Random) -> None:
        def build(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str], None]:
            headers = {**self._server_headers(), "Content-Encoding": "gzip"}
            return gzip.compress(orjson.dumps(events)), headers, None

        self._send_events(client, "gzip", self._events(rng), build)

    def _beacon(self, client: httpx.Client, rng: random.Random) -> None:
        key_in_query = rng.random() < 0.5

        def build(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str], Any]:
            batch: dict[str, Any] = {"sent_at": now_iso(), "events": events}
            headers = {"Content-Type": "text/plain;charset=UTF-8", "Origin": SITE_ORIGIN}
            if key_in_query:
                return orjson.dumps(batch), headers, {"key": self.keys["browser"]}
            batch["key"] = self.keys["browser"]
            return orjson.dumps(batch), headers, None

        self._send_events(client, "beacon", self._events(rng, 1, 5), build)

    def _partial(self, client: httpx.Client, rng: random.Random) -> None:
        valid = self._events(rng, 1, 5)
        # Without occurred_at the event fails validation and goes to the dead-letter topic.
        invalid = {"event_id": str(uuid.uuid4()), "event_name": "page_turned"}

        def build(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str], None]:
            return orjson.dumps(events), self._server_headers(), None

        ids = [event["event_id"] for event in valid]
        self._send_events(client, "partial", [*valid, invalid], build, valid_ids=ids)

    def _invalid_json(self, client: httpx.Client, rng: random.Random) -> None:
        body = b'[{"event_id": "' + str(uuid.uuid4()).encode() + b'", "event_name": '
        self.tally.record("invalid_json", self._post(client, body, self._server_headers()))

    def _invalid_events(self, client: httpx.Client, rng: random.Random) -> None:
        events = [{"event_id": str(uuid.uuid4()), "event_name": "no_such_event"}]
        body = orjson.dumps(events)
        self.tally.record("invalid_events", self._post(client, body, self._server_headers()))

    def _bad_key(self, client: httpx.Client, rng: random.Random) -> None:
        headers = {"Content-Type": "application/json", "X-API-Key": "not-a-key-" + "x" * 30}
        body = orjson.dumps(self._events(rng, 1, 2))
        self.tally.record("bad_key", self._post(client, body, headers))

    def _oversized(self, client: httpx.Client, rng: random.Random) -> None:
        body = b'{"events": [' + b" " * (MAX_BODY_BYTES + 10) + b"]}"
        if rng.random() < 0.5:
            self.tally.record("oversized", self._post(client, body, self._server_headers()))
            return

        def chunks() -> Any:
            # Without Content-Length the limit applies while the body is read.
            for offset in range(0, len(body), 64 * 1024):
                yield body[offset : offset + 64 * 1024]

        status = self._post(client, chunks(), self._server_headers())
        self.tally.record("oversized chunked", status)

    def _too_many_events(self, client: httpx.Client, rng: random.Random) -> None:
        body = orjson.dumps([make_event() for _ in range(501)])
        self.tally.record("too_many_events", self._post(client, body, self._server_headers()))

    def _gzip_bomb(self, client: httpx.Client, rng: random.Random) -> None:
        body = gzip.compress(b"[" + b" " * (8 * MAX_BODY_BYTES) + b"]", compresslevel=9)
        headers = {**self._server_headers(), "Content-Encoding": "gzip"}
        self.tally.record("gzip_bomb", self._post(client, body, headers))

    def _rate_limited(self, client: httpx.Client, rng: random.Random) -> None:
        headers = {"Content-Type": "application/json", "X-API-Key": self.keys["limited"]}
        events = self._events(rng, 1, 3)
        status = self._post(client, orjson.dumps(events), headers)
        acknowledged = [event["event_id"] for event in events] if status == 200 else None
        self.tally.record("rate_limited", status, acknowledged)

    def _preflight(self, client: httpx.Client, rng: random.Random) -> None:
        headers = {"Origin": SITE_ORIGIN, "Access-Control-Request-Method": "POST"}
        try:
            status = client.options(self.collector.url + "/collect", headers=headers).status_code
        except httpx.TransportError:
            status = 0
        self.tally.record("preflight", status)

    def _slow_body(self, client: httpx.Client, rng: random.Random) -> None:
        body = orjson.dumps([make_event()])
        head = request_head(self.collector.port, "/collect", len(body), self.keys["server"])
        with connect(self.collector.port, timeout=BODY_READ_TIMEOUT + 5) as sock:
            sock.sendall(head + body[:10])
            deadline = time.monotonic() + BODY_READ_TIMEOUT + 3
            response = b""
            # One byte every 0.25 s never finishes the body within the read timeout.
            for byte in body[10:]:
                if time.monotonic() > deadline or self.stop_event.is_set():
                    break
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                sock.settimeout(0.25)
                try:
                    response = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if response:
                    break
            sock.settimeout(2)
            if response:
                response += read_response(sock)
        if not response and self.stop_event.is_set():
            self.tally.record("slow_body cut short by the end of the run", 0)
            return
        self.tally.record("slow_body", status_of(response))

    def _disconnect(self, client: httpx.Client, rng: random.Random) -> None:
        body = orjson.dumps(self._events(rng, 2, 5))
        head = request_head(self.collector.port, "/collect", len(body), self.keys["server"])
        with connect(self.collector.port) as sock:
            sock.sendall(head + body[: len(body) // 2])
        self.tally.record("disconnect", 0)


@dataclass
class Sample:
    seconds: float
    rss: int
    fds: int
    tasks: float | None
    inflight: float | None


class Sampler(threading.Thread):
    """Record the collector's RSS, open fds and asyncio task count every ``interval`` s."""

    def __init__(self, collector: CollectorProcess, interval: float, started: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.collector = collector
        self.interval = interval
        self.started = started
        self.samples: list[Sample] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        assert self.collector.process is not None
        pid = self.collector.process.pid
        while not self.stop_event.wait(self.interval):
            try:
                rss = rss_bytes(pid)
                fds = open_fds(pid)
            except (OSError, RuntimeError):
                return
            try:
                metrics = scrape(self.collector.url)
            except httpx.HTTPError:
                metrics = {}
            self.samples.append(
                Sample(
                    time.monotonic() - self.started,
                    rss,
                    fds,
                    metrics.get("collector_asyncio_tasks"),
                    metrics.get("collector_inflight_events"),
                )
            )


class FaultSchedule(threading.Thread):
    """Break Redis and Pub/Sub at fixed offsets within each period, then repair them."""

    def __init__(
        self, redis: RedisServer, pubsub: PubSubProcess | None, period: float, started: float
    ) -> None:
        super().__init__(name="soak-faults", daemon=True)
        self.redis = redis
        self.pubsub = pubsub
        self.period = period
        self.started = started
        self.stop_event = threading.Event()
        self.injected: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        steps: list[tuple[float, str]] = [
            (10, "redis stop"),
            (16, "redis start"),
            (30, "redis pause"),
            (34, "redis resume"),
        ]
        if pubsub is not None:
            steps += [
                (40, "pubsub unavailable"),
                (45, "pubsub ok"),
                (50, "pubsub slow"),
                (55, "pubsub ok"),
                (62, "pubsub frozen"),
                (66, "pubsub ok"),
                (75, "pubsub internal"),
                (79, "pubsub ok"),
            ]
        scale = min(1.0, period / 90)
        self.steps = [(offset * scale, action) for offset, action in steps]

    def run(self) -> None:
        cycle = 0
        while not self.stop_event.is_set():
            for offset, action in self.steps:
                at = self.started + cycle * self.period + offset
                if self.stop_event.wait(max(0.0, at - time.monotonic())):
                    return
                try:
                    self.apply(action)
                except Exception as exc:  # noqa: BLE001 - reported, and the soak goes on
                    self.errors.append(f"{action}: {type(exc).__name__}: {exc}")
            cycle += 1
            end_of_cycle = self.started + cycle * self.period
            if self.stop_event.wait(max(0.0, end_of_cycle - time.monotonic())):
                return

    def apply(self, action: str) -> None:
        process = self.redis.process
        if action == "redis stop":
            self.redis.stop()
        elif action == "redis start":
            self.redis.start()
        elif action == "redis pause" and process is not None:
            process.send_signal(signal.SIGSTOP)
        elif action == "redis resume" and process is not None:
            process.send_signal(signal.SIGCONT)
        elif action.startswith("pubsub") and self.pubsub is not None:
            assert self.pubsub.control is not None
            mode = action.split()[1]
            if mode == "slow":
                self.pubsub.control.set_fault("slow", delay_seconds=1.5)
            else:
                self.pubsub.control.set_fault(mode)
        if not action.endswith(("start", "resume", "ok")):
            self.injected[action] += 1

    def repair(self) -> None:
        """Resume and restart Redis and clear the Pub/Sub fault, whatever state they are in."""
        self.stop_event.set()
        self.join(10)
        process = self.redis.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
        else:
            self.redis.start()
        if self.pubsub is not None and self.pubsub.control is not None:
            self.pubsub.control.set_fault("ok")


@dataclass
class Summary:
    """Start, end and maximum of one sampled resource, and whether it stayed flat."""

    start: float
    end: float
    maximum: float
    flat: bool


def summarize(
    samples: list[Sample], value: Any, warmup: float, slack: float = 0.0
) -> Summary | None:
    points = [(sample.seconds, value(sample)) for sample in samples]
    points = [(seconds, number) for seconds, number in points if number is not None]
    if not points:
        return None
    settled = [number for seconds, number in points if seconds >= warmup] or [points[-1][1]]
    window = max(3, len(settled) // 10)
    start = statistics.median(settled[:window])
    end = statistics.median(settled[-window:])
    maximum = max(number for _, number in points)
    flat = end - start <= max(FLAT_FRACTION * start, slack)
    return Summary(start, end, maximum, flat)


def make_keys(folder: Path) -> tuple[Path, dict[str, str]]:
    path = folder / "keys.json"
    keys = {
        "browser": add_key(path, "web", "browser", [SITE_ORIGIN]),
        "server": add_key(path, "backend", "server", []),
        "limited": add_key(path, "limited", "server", [], rate_limit="120/minute"),
    }
    return path, keys


def collector_env(
    keys_path: Path, redis: RedisServer, pubsub: PubSubProcess | None
) -> dict[str, str]:
    env = {
        "COLLECTOR_KEYS_FILE": str(keys_path),
        "COLLECTOR_RATE_LIMIT_STORAGE": redis.url,
        "COLLECTOR_IP_RATE_LIMIT": "10000000/minute",
        "COLLECTOR_KEY_RATE_LIMIT": "10000000/minute",
        "COLLECTOR_SINK_CONFIRM_TIMEOUT": "1",
        "COLLECTOR_BODY_READ_TIMEOUT": str(BODY_READ_TIMEOUT),
        "COLLECTOR_LOG_LEVEL": "WARNING",
        # A crash in native code then writes every thread's Python stack to the log.
        "PYTHONFAULTHANDLER": "1",
    }
    if pubsub is not None:
        env.update(
            {
                "COLLECTOR_SINK": "pubsub",
                "COLLECTOR_PUBSUB_TOPIC": TOPIC,
                "COLLECTOR_PUBSUB_INVALID_TOPIC": INVALID_TOPIC,
                "COLLECTOR_PUBSUB_PUBLISH_TIMEOUT": "5",
                "PUBSUB_EMULATOR_HOST": pubsub.host_port,
            }
        )
    return env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python tests/soak.py",
        description="Soak a collector process with mixed traffic and scheduled faults.",
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="traffic duration, minutes")
    parser.add_argument("--sink", choices=["local", "pubsub"], default="local")
    parser.add_argument(
        "--rate", type=float, default=50.0, help="requests per second, all threads together"
    )
    parser.add_argument("--threads", type=int, default=6, help="traffic threads")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="sampling interval, s")
    parser.add_argument(
        "--fault-period", type=float, default=90.0, help="seconds between fault schedule repeats"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the request mix")
    parser.add_argument("--folder", type=Path, help="work folder (default: a new temp folder)")
    parser.add_argument("--report", type=Path, help="markdown file to write the report into")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.threads < 1:
        parser.error("--minutes and --rate must be > 0 and --threads >= 1")
    return args


@dataclass
class Outcome:
    """Everything the report shows."""

    args: argparse.Namespace
    command: str
    started_at: datetime
    code: str
    seconds: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    statuses: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    acknowledged: set[str] = field(default_factory=set)
    sink: SinkCopies | None = None
    staging: dict[str, int] = field(default_factory=dict)
    missing_in_sink: int = 0
    missing_in_staging: int = 0
    repeated_in_staging: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    fault_errors: list[str] = field(default_factory=list)
    final_metrics: dict[str, float] = field(default_factory=dict)
    dead_letters: int | None = None
    exit_seconds: float | None = None
    exit_code: int | None = None
    alive_at_end: bool = False
    died_at: datetime | None = None
    problems: list[str] = field(default_factory=list)


def run(args: argparse.Namespace) -> Outcome:
    command = "python tests/soak.py " + " ".join(sys.argv[1:])
    outcome = Outcome(args, command, datetime.now(UTC), describe_code())
    own_folder = args.folder is None
    folder = Path(tempfile.mkdtemp(prefix="soak-")) if own_folder else args.folder
    folder.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(folder)
    pubsub: PubSubProcess | None = None
    collector: CollectorProcess | None = None
    try:
        redis.start()
        if args.sink == "pubsub":
            pubsub = PubSubProcess(folder / "pubsub-server.log").start()
            pubsub.create_topic(TOPIC)
            pubsub.create_topic(INVALID_TOPIC)
        keys_path, keys = make_keys(folder)
        collector = CollectorProcess(folder / "data", collector_env(keys_path, redis, pubsub))
        collector.start()
        assert collector.process is not None
        print(
            f"collector pid {collector.process.pid} on {collector.url}, work folder {folder}",
            flush=True,
        )

        started = time.monotonic()
        deadline = started + args.minutes * 60
        traffic = Traffic(collector, keys, args.rate, args.threads, deadline, args.seed)
        sampler = Sampler(collector, args.sample_seconds, started)
        faults = FaultSchedule(redis, pubsub, args.fault_period, started)
        sampler.start()
        faults.start()
        traffic.start()
        next_progress = started + 30
        try:
            while time.monotonic() < deadline and collector.process.poll() is None:
                time.sleep(min(1.0, max(0.1, deadline - time.monotonic())))
                if time.monotonic() >= next_progress:
                    next_progress += 30
                    elapsed = (time.monotonic() - started) / 60
                    acknowledged = len(traffic.tally.acknowledged)
                    print(f"{elapsed:5.1f} min, {acknowledged} acknowledged", flush=True)
        finally:
            outcome.seconds = time.monotonic() - started
            traffic.join()
            faults.repair()
        if collector.process.poll() is not None:
            outcome.died_at = datetime.now(UTC)
            outcome.exit_code = collector.process.returncode
            print(
                f"the collector exited with status {outcome.exit_code} at {outcome.died_at}",
                flush=True,
            )
        time.sleep(3)
        sampler.stop_event.set()
        sampler.join(10)
        outcome.alive_at_end = collector.process.poll() is None
        if outcome.alive_at_end:
            outcome.final_metrics = scrape(collector.url)
            signalled = time.monotonic()
            collector.process.send_signal(signal.SIGTERM)
            try:
                outcome.exit_code = collector.process.wait(15)
                outcome.exit_seconds = time.monotonic() - signalled
            except subprocess.TimeoutExpired:
                outcome.problems.append("the collector did not exit within 15 s of SIGTERM")

        outcome.samples = sampler.samples
        outcome.statuses = traffic.tally.statuses
        outcome.acknowledged = traffic.tally.acknowledged
        outcome.faults = faults.injected
        outcome.fault_errors = faults.errors
        check_delivery(outcome, folder, collector, pubsub)
    finally:
        if collector is not None:
            collector.stop(signal.SIGKILL)
        if pubsub is not None:
            pubsub.stop()
        if redis.process is not None and redis.process.poll() is None:
            redis.process.send_signal(signal.SIGCONT)
        redis.stop()
    judge(outcome)
    if own_folder and not outcome.problems:
        shutil.rmtree(folder, ignore_errors=True)
    elif outcome.problems:
        print(f"kept the work folder {folder} for inspection")
    return outcome


def check_delivery(
    outcome: Outcome, folder: Path, collector: CollectorProcess, pubsub: PubSubProcess | None
) -> None:
    if pubsub is not None:
        assert pubsub.control is not None
        data_dir = folder / "pubsub-rows"
        sink = write_pubsub_rows(pubsub.control.published(TOPIC), data_dir)
        outcome.dead_letters = len(pubsub.control.published(INVALID_TOPIC))
    else:
        data_dir = collector.data_dir
        sink = read_local_sink(data_dir)
    staging = build_staging(data_dir, folder / "warehouse.duckdb")
    report = compare(outcome.acknowledged, sink, staging)
    outcome.sink = sink
    outcome.staging = staging.counts
    outcome.missing_in_sink = len(report.missing_in_sink)
    outcome.missing_in_staging = len(report.missing_in_staging)
    outcome.repeated_in_staging = len(report.repeated_in_staging)


def judge(outcome: Outcome) -> None:
    problems = outcome.problems
    if not outcome.alive_at_end:
        problems.append(
            f"the collector process exited during the run, with status {outcome.exit_code} "
            f"({describe_exit(outcome.exit_code)}), {outcome.seconds:.0f} s after the traffic "
            "started"
        )
    server_errors = {status for (_, status) in outcome.statuses if status >= 500 and status != 503}
    if server_errors:
        problems.append(f"statuses {sorted(server_errors)} were returned")
    if outcome.missing_in_sink:
        problems.append(f"{outcome.missing_in_sink} acknowledged events are not in the sink")
    if outcome.missing_in_staging:
        problems.append(f"{outcome.missing_in_staging} acknowledged events are not in staging")
    if outcome.repeated_in_staging:
        problems.append(f"{outcome.repeated_in_staging} events appear more than once in staging")
    if not outcome.acknowledged:
        problems.append("no event was acknowledged")
    for name, summary in resource_summaries(outcome).items():
        if summary is not None and not summary.flat:
            problems.append(f"{name} did not stay flat: {summary.start:.0f} -> {summary.end:.0f}")
    problems.extend(f"fault step failed: {error}" for error in outcome.fault_errors)


def describe_exit(code: int | None) -> str:
    """Explain an exit status of the collector that the soak script did not cause."""
    if code is None:
        return "unknown"
    if code == -signal.SIGTERM:
        return "SIGTERM from another process, since the script sends it only at the end"
    if code == -signal.SIGKILL:
        return "SIGKILL from another process or the kernel's out-of-memory killer"
    if -code in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
        return f"killed by {signal.Signals(-code).name}: a crash, with Python stacks in its log"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return "the process ended on its own"


def resource_summaries(outcome: Outcome) -> dict[str, Summary | None]:
    warmup = min(60.0, outcome.seconds * 0.2)
    samples = outcome.samples
    threads = outcome.args.threads
    return {
        "RSS (MiB)": summarize(samples, lambda s: s.rss / 2**20, warmup),
        "open file descriptors": summarize(samples, lambda s: s.fds, warmup, threads),
        "asyncio tasks": summarize(samples, lambda s: s.tasks, warmup, threads),
    }


def format_report(outcome: Outcome) -> str:
    """Return the markdown report: settings, resources, statuses, delivery and the verdict."""
    sections = [
        _format_header(outcome),
        _format_resources(outcome),
        _format_statuses(outcome),
        _format_delivery(outcome),
        _format_ending(outcome),
    ]
    return "\n\n".join(sections) + "\n"


def describe_code() -> str:
    """Return the checked-out commit, and whether tracked files differ from it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {commit}" + (" with uncommitted changes" if changes else "")


def _format_header(outcome: Outcome) -> str:
    args = outcome.args
    return (
        f"### {args.sink} sink, {outcome.seconds / 60:.1f} minutes, "
        f"{outcome.started_at:%Y-%m-%d %H:%M} UTC\n\n"
        f"Command: `{outcome.command}`\n\n"
        f"Code: {outcome.code}.\n\n"
        f"Machine: {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}. Traffic: {args.rate:g} requests/s from "
        f"{args.threads} threads, faults every {args.fault_period:g} s, "
        f"{len(outcome.samples)} samples every {args.sample_seconds:g} s."
    )


def _format_resources(outcome: Outcome) -> str:
    lines = ["| resource | start | end | max | flat |", "| --- | ---: | ---: | ---: | --- |"]
    for name, summary in resource_summaries(outcome).items():
        if summary is None:
            lines.append(f"| {name} | - | - | - | not sampled |")
            continue
        flat = "yes" if summary.flat else "NO"
        lines.append(
            f"| {name} | {summary.start:.1f} | {summary.end:.1f} | {summary.maximum:.1f} | {flat} |"
        )
    lines.append("")
    lines.append(
        "Start and end are medians of the first and last tenth of the samples taken after "
        "the warm-up (the first minute, or the first fifth of a shorter run). Flat means the "
        "end is at most 10 % above the start. For file descriptors and tasks, which move with "
        f"the requests in flight, a rise of up to {outcome.args.threads} (one per thread) also "
        "counts as flat."
    )
    return "\n".join(lines)


def _format_statuses(outcome: Outcome) -> str:
    lines = ["| request kind | status | count |", "| --- | ---: | ---: |"]
    for (kind, status), count in sorted(outcome.statuses.items()):
        if kind == "acknowledged batches":
            continue
        if status == 0:
            shown = "no response"
        elif status < 0:
            shown = "client error"
        else:
            shown = str(status)
        lines.append(f"| {kind} | {shown} | {count} |")
    metrics = outcome.final_metrics
    disconnects = metrics.get('collector_requests_total{path="/collect",status="499"}', 0)
    lines.append("")
    lines.append(f"The collector counted {disconnects:.0f} requests as 499 (client disconnected).")
    prefix = 'collector_sink_errors_total{reason="'
    suffix = '"}'
    sink_errors = [
        f"{name.removeprefix(prefix).removesuffix(suffix)} {value:.0f}"
        for name, value in sorted(metrics.items())
        if name.startswith(prefix)
    ]
    if sink_errors:
        lines.append(f"collector_sink_errors_total by reason: {', '.join(sink_errors)}.")
    return "\n".join(lines)


def _format_delivery(outcome: Outcome) -> str:
    sink = outcome.sink or SinkCopies()
    metrics = outcome.final_metrics
    accepted = sum(
        value
        for name, value in metrics.items()
        if name.startswith("collector_events_accepted_total")
    )
    lines = [
        "| delivery | count |",
        "| --- | ---: |",
        f"| events acknowledged with 200 | {len(outcome.acknowledged)} |",
        f"| collector_events_accepted_total at the end | {accepted:.0f} |",
        f"| copies in the sink | {len(sink.event_ids)} |",
        f"| distinct events in the sink | {len(set(sink.event_ids))} |",
        f"| acknowledged events missing in the sink | {outcome.missing_in_sink} |",
        f"| rows in staging.stg_events | {sum(outcome.staging.values())} |",
        f"| acknowledged events missing in staging | {outcome.missing_in_staging} |",
        f"| events more than once in staging | {outcome.repeated_in_staging} |",
    ]
    if sink.unreadable_lines:
        lines.append(f"| unreadable sink lines | {sink.unreadable_lines} |")
    invalid = metrics.get('collector_events_rejected_total{reason="invalid"}')
    if invalid is not None:
        lines.append(f'| collector_events_rejected_total{{reason="invalid"}} | {invalid:.0f} |')
    if outcome.dead_letters is not None:
        lines.append(f"| records on the dead-letter topic | {outcome.dead_letters} |")
    return "\n".join(lines)


def _format_ending(outcome: Outcome) -> str:
    faults = ", ".join(f"{action} x{count}" for action, count in sorted(outcome.faults.items()))
    lines = [f"Faults injected: {faults or 'none'}.", ""]
    if outcome.died_at is not None:
        lines.append(
            f"The collector exited during the run with status {outcome.exit_code} at "
            f"{outcome.died_at:%H:%M:%S} UTC. Its log is in the kept work folder."
        )
    elif outcome.exit_seconds is not None:
        lines.append(
            f"SIGTERM at the end: exited in {outcome.exit_seconds:.1f} s with status "
            f"{outcome.exit_code}."
        )
    else:
        lines.append("SIGTERM at the end: the collector did not exit within 15 s.")
    lines.append("")
    if outcome.problems:
        lines.append("Result: FAILED")
        lines.extend(f"- {problem}" for problem in outcome.problems)
    else:
        lines.append("Result: passed (no 500, nothing acknowledged lost or repeated, flat).")
    return "\n".join(lines)


def write_report(path: Path, sink: str, text: str) -> None:
    """Put ``text`` between this sink's markers in ``path``, replacing an earlier block."""
    begin = f"<!-- soak report: {sink} sink, begin -->"
    end = f"<!-- soak report: {sink} sink, end -->"
    block = f"{begin}\n{text}{end}\n"
    existing = path.read_text() if path.exists() else ""
    if begin in existing and end in existing:
        before, _, rest = existing.partition(begin)
        _, _, after = rest.partition(end + "\n")
        path.write_text(before + block + after)
    else:
        separator = "" if not existing or existing.endswith("\n\n") else "\n"
        path.write_text(existing + separator + block)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outcome = run(args)
    text = format_report(outcome)
    print(text)
    if args.report is not None:
        write_report(args.report, args.sink, text)
        print(f"wrote the report into {args.report}")
    return 1 if outcome.problems else 0


if __name__ == "__main__":
    sys.exit(main())
