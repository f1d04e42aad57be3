"""Benchmark the collector against a bare ASGI ceiling and the obvious FastAPI collector.

Every server runs under uvicorn (uvloop, httptools, one worker) pinned to one core, and the
load generator plus the Pub/Sub test server run pinned to another, all on loopback. Run from
the repository root (Linux only: it reads /proc and uses taskset and wrk):

    python bench/run.py                       # the table, 10 s per scenario, 3 to 7 minutes
    python bench/run.py --latency-at 0.7      # also p99 at 70 % of the Pub/Sub maximum
    python bench/run.py --scenarios none --soak 300   # memory over 5 minutes at 70 %

Scenarios, each with 1 and with 20 events per request (see --events):

- ceiling: bench/apps/ceiling.py reads the body and responds 204 No Content.
- obvious-pubsub, obvious-file: bench/apps/obvious.py, a FastAPI route that validates the
  body with the collector's models and publishes each event with the high-level Pub/Sub
  PublisherClient, or appends and fsyncs one file per request.
- collector-local, collector-pubsub: ``collector serve`` with an API key sent with an allowed
  Origin (so CORS headers are built), in-memory rate limits set too high to trigger,
  enrichment and metrics, on the local sink (fsync on) or the Pub/Sub sink.

The maximum rate comes from wrk, a closed loop: each connection sends its next request when
the previous response arrives. A measurement is repeated (--attempts) while other processes
use more than --max-other-share of the server core, because the machine may be shared.
Latency at a fixed rate (--latency-at, --soak) comes from the open-loop generator in this
file, which sends on a fixed schedule. It measures each latency from the time the request
was due, so a stalled server cannot hide its queueing delay.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from collector.keys import add_key  # noqa: E402

PYTHON = sys.executable
HOST = "127.0.0.1"
TOPIC = "projects/bench-project/topics/events"
ORIGIN = "https://bench.example"
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
# Rate limits are checked on every request but never reached.
UNREACHABLE_LIMIT = "1000000000/minute"
SCENARIO_NAMES = (
    "ceiling",
    "obvious-pubsub",
    "obvious-file",
    "collector-local",
    "collector-pubsub",
)
# The obvious scenario with the same sink, for the "vs obvious" ratio.
OBVIOUS_FOR = {"collector-local": "obvious-file", "collector-pubsub": "obvious-pubsub"}
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
# A late RSS peak above the early peak by more than this fraction means memory grew.
SOAK_TOLERANCE = 0.10

# Goals from the project's performance targets.
GOAL_CEILING_RATIO = 0.35
GOAL_LOCAL_EVENTS_PER_SECOND = 150_000
GOAL_PUBSUB_RATIO = 3.0
GOAL_P99_SECONDS = 0.050


class ScenarioFailed(Exception):
    """A scenario could not be measured, or its responses or stored events were wrong."""


class ServerExited(ScenarioFailed):
    """The server process ended while it was being measured."""


# Request body


def make_events(count: int, now: datetime) -> list[dict[str, object]]:
    """Return ``count`` valid events of one reading session, as the browser tracker sends them.

    Event times are one to two seconds before ``now``, inside the collector's window of
    30 days in the past and 5 minutes in the future.
    """
    book = {"content_id": "book-9781", "content_type": "book", "title": "Moby-Dick"}
    audio = {"content_id": "audio-311", "content_type": "audio", "duration_seconds": 5400}
    kinds: list[tuple[str, dict[str, object] | None, dict[str, object]]] = [
        ("page_turned", book, {"page_number": 13, "page_count": 600, "direction": "forward"}),
        ("session_start", None, {}),
        ("book_opened", book, {"format": "epub", "resume_page": 12}),
        ("audio_played", audio, {"position_seconds": 120.5, "duration_seconds": 5400}),
        ("chapter_completed", book, {"chapter_index": 3, "chapter_count": 42}),
        ("audio_paused", audio, {"position_seconds": 300, "duration_seconds": 5400}),
    ]
    events = []
    for index in range(count):
        # Two of every three events are page turns, as in a reading session.
        name, content, properties = kinds[0] if index % 3 else kinds[(index // 3) % len(kinds)]
        occurred_at = now - timedelta(seconds=2) + timedelta(milliseconds=50 * index)
        event: dict[str, object] = {
            "event_id": str(uuid.uuid4()),
            "event_name": name,
            "occurred_at": _iso(occurred_at),
            "anonymous_id": "anon-6f1c2b",
            "session_id": "session-5d2e",
            "context": {
                "page_url": "https://bench.example/read/book-9781",
                "platform": "web",
                "locale": "en-US",
                "timezone": "Europe/Berlin",
            },
            "properties": properties,
        }
        if content is not None:
            event["content"] = content
        events.append(event)
    return events


def make_body(events_per_request: int) -> bytes:
    now = datetime.now(UTC)
    batch = {"sent_at": _iso(now), "events": make_events(events_per_request, now)}
    return json.dumps(batch, separators=(",", ":")).encode()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Processes and /proc


def process_cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU seconds of all threads of process ``pid``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    # After the command name, utime and stime are the 12th and 13th fields, in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_memory_kib(pid: int, name: str) -> int:
    """Return a ``Vm*`` field of /proc/PID/status in KiB, such as VmRSS or VmHWM."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise ScenarioFailed(f"/proc/{pid}/status has no {name} line")


def core_busy_seconds(core: int) -> float:
    """Return the time CPU ``core`` spent running processes since boot, from /proc/stat.

    Counts user, nice and system time. Interrupt and softirq time is left out because on
    loopback it mostly carries the benchmark's own packets, and steal time belongs to no
    process of this machine.
    """
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system = (int(value) for value in line.split()[1:4])
            return (user + nice + system) / os.sysconf("SC_CLK_TCK")
    raise ScenarioFailed(f"/proc/stat has no line for CPU {core}")


def own_cpu_seconds() -> float:
    """Return the CPU seconds of this process plus its waited-for children, such as wrk."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def child_environment(**extra: str) -> dict[str, str]:
    """Return this process's environment for a server, without proxies or COLLECTOR_ settings."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("COLLECTOR_")
        and name.lower() not in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy")
        and name != "PUBSUB_EMULATOR_HOST"
    }
    environment["PYTHONPATH"] = str(REPO_ROOT)
    environment.update(extra)
    return environment


def stop_process(process: subprocess.Popen[bytes], name: str) -> None:
    """Send SIGTERM, wait up to STOP_TIMEOUT_SECONDS, then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        print(f"warning: {name} (pid {process.pid}) ignored SIGTERM; killing it", file=sys.stderr)
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


class PubSubServer:
    """bench/apps/pubsub_server.py in a child process pinned to the load core."""

    def __init__(self, workdir: Path, core: int) -> None:
        self.log_path = workdir / "pubsub-server.log"
        self.published: int | None = None
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                ["taskset", "-c", str(core), PYTHON, "-m", "bench.apps.pubsub_server"]
                + ["--host", HOST, "--topic", TOPIC],
                cwd=REPO_ROOT,
                env=child_environment(),
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            raise ScenarioFailed(
                f"the Pub/Sub test server exited before it was ready; see {self.log_path}:\n"
                + _tail(self.log_path)
            )
        self.host_port: str = json.loads(line)["host_port"]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process, "the Pub/Sub test server")
        assert self.process.stdout is not None
        for line in self.process.stdout.read().splitlines():
            with contextlib.suppress(ValueError):
                self.published = json.loads(line).get("published", self.published)
        self.process.stdout.close()


@dataclass
class ServerSpec:
    """How to start the server of one scenario, and where its events end up."""

    command: list[str]
    environment: dict[str, str]
    ready_status: int
    events_folder: Path | None = None
    events_file: Path | None = None


class Server:
    """A server process pinned to the server core, with its log in the work folder."""

    def __init__(self, name: str, spec: ServerSpec, port: int, workdir: Path, core: int) -> None:
        self.name = name
        self.spec = spec
        self.port = port
        self.url = f"http://{HOST}:{port}/collect"
        self.log_path = workdir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                ["taskset", "-c", str(core), *spec.command],
                cwd=workdir,
                env=spec.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, body: bytes, headers: dict[str, str]) -> None:
        """Post ``body`` until the server responds with the expected status."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        last_error = "no response"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerExited(
                    f"{self.name} exited with status {self.process.returncode} before it was "
                    f"ready; see {self.log_path}:\n{_tail(self.log_path)}"
                )
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with opener.open(request, timeout=5) as response:
                    status, text = response.status, response.read()[:300]
            except urllib.error.HTTPError as exc:
                status, text = exc.code, exc.read()[:300]
            except OSError as exc:
                last_error = str(exc)
                time.sleep(0.2)
                continue
            if status == self.spec.ready_status:
                return
            last_error = f"status {status}: {text.decode(errors='replace')}"
            time.sleep(0.2)
        raise ScenarioFailed(
            f"{self.name} was not ready after {READY_TIMEOUT_SECONDS} s: {last_error}"
        )

    def check_running(self) -> None:
        """Raise ServerExited, with the end of the server's log, if the process has ended."""
        status = self.process.poll()
        if status is None:
            return
        cause = f"signal {signal.Signals(-status).name}" if status < 0 else f"status {status}"
        raise ServerExited(
            f"{self.name} (pid {self.pid}) exited with {cause} during the measurement, which "
            f"this script did not cause\nlast lines of its log:\n{_tail(self.log_path)}"
        )

    def stop(self) -> None:
        stop_process(self.process, self.name)

    def stored_events(self) -> int | None:
        """Count the NDJSON lines the server wrote, or None when it writes no file."""
        if self.spec.events_file is not None:
            return count_lines([self.spec.events_file])
        if self.spec.events_folder is not None:
            return count_lines(sorted(self.spec.events_folder.glob("*.ndjson")))
        return None


def count_lines(paths: list[Path]) -> int:
    lines = 0
    for path in paths:
        with path.open("rb") as file:
            while chunk := file.read(16 * 1024 * 1024):
                lines += chunk.count(b"\n")
    return lines


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"


def server_spec(scenario: str, workdir: Path, port: int, pubsub: PubSubServer | None) -> ServerSpec:
    uvicorn = [PYTHON, "-m", "uvicorn", "--host", HOST, "--port", str(port)]
    uvicorn += ["--loop", "uvloop", "--http", "httptools", "--workers", "1"]
    uvicorn += ["--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "30"]
    emulator = {"PUBSUB_EMULATOR_HOST": pubsub.host_port} if pubsub is not None else {}

    if scenario == "ceiling":
        return ServerSpec([*uvicorn, "bench.apps.ceiling:app"], child_environment(), 204)
    if scenario == "obvious-pubsub":
        return ServerSpec(
            [*uvicorn, "--factory", "bench.apps.obvious:create_pubsub_app"],
            child_environment(BENCH_PUBSUB_TOPIC=TOPIC, **emulator),
            200,
        )
    if scenario == "obvious-file":
        events_file = workdir / "obvious-events.ndjson"
        return ServerSpec(
            [*uvicorn, "--factory", "bench.apps.obvious:create_file_app"],
            child_environment(BENCH_FILE_PATH=str(events_file)),
            200,
            events_file=events_file,
        )

    sink = "pubsub" if scenario == "collector-pubsub" else "local"
    environment = child_environment(
        COLLECTOR_KEYS_FILE=str(workdir / "keys.json"),
        COLLECTOR_DATA_DIR=str(workdir / "data"),
        COLLECTOR_SINK=sink,
        COLLECTOR_IP_RATE_LIMIT=UNREACHABLE_LIMIT,
        COLLECTOR_KEY_RATE_LIMIT=UNREACHABLE_LIMIT,
        COLLECTOR_LOG_LEVEL="WARNING",
        **emulator,
    )
    if sink == "pubsub":
        environment["COLLECTOR_PUBSUB_TOPIC"] = TOPIC
    command = [PYTHON, "-m", "collector.cli", "serve", "--host", HOST, "--port", str(port)]
    folder = workdir / "data" / "events" if sink == "local" else None
    return ServerSpec(command, environment, 200, events_folder=folder)


# wrk


@dataclass
class WrkResult:
    requests: int
    seconds: float
    requests_per_second: float
    p50: float
    p99: float
    non_2xx: int
    socket_errors: dict[str, int]
    output: str


_WRK_SCRIPT = """\
local file = assert(io.open({body_path}, "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
{headers}
"""
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def write_wrk_script(path: Path, body_path: Path, headers: dict[str, str]) -> None:
    lines = "\n".join(
        f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}" for name, value in headers.items()
    )
    path.write_text(_WRK_SCRIPT.format(body_path=json.dumps(str(body_path)), headers=lines))


def run_wrk(
    url: str, script: Path, connections: int, seconds: float, core: int, threads: int
) -> WrkResult:
    command = ["taskset", "-c", str(core), "wrk", "-t", str(threads), "-c", str(connections)]
    command += ["-d", f"{seconds:g}s", "--timeout", "10s", "--latency", "-s", str(script), url]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if completed.returncode != 0:
        raise ScenarioFailed(f"wrk failed with status {completed.returncode}: {completed.stderr}")
    return parse_wrk(completed.stdout)


def parse_wrk(output: str) -> WrkResult:
    """Read the totals and the latency distribution from wrk's --latency report."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h),", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if total is None or rate is None:
        raise ScenarioFailed(f"cannot read wrk's report:\n{output}")
    percentiles = {
        match.group(1): float(match.group(2)) * _DURATION_UNITS[match.group(3)]
        for match in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True))
        if errors
        else {}
    )
    return WrkResult(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _DURATION_UNITS[total.group(3)],
        requests_per_second=float(rate.group(1)),
        p50=percentiles.get("50", float("nan")),
        p99=percentiles.get("99", float("nan")),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
        output=output,
    )


def check_wrk(name: str, result: WrkResult) -> None:
    if result.non_2xx:
        raise ScenarioFailed(
            f"{name}: wrk counted {result.non_2xx} responses that were not 2xx of "
            f"{result.requests}:\n{result.output}"
        )
    if result.requests == 0:
        raise ScenarioFailed(f"{name}: wrk completed no request:\n{result.output}")


# Open-loop load generator


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that carries one request at a time."""

    def __init__(self, generator: OpenLoopGenerator) -> None:
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due_at = 0.0
        self.sent_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, due_at: float, now: float) -> None:
        self.due_at = due_at
        self.sent_at = now
        assert self.transport is not None
        self.transport.write(self.generator.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            self.generator.on_response(self, int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.generator.on_connection_lost(self, exc)


@dataclass
class OpenLoopResult:
    target_rate: float
    seconds: float
    sent: int
    completed: int
    statuses: collections.Counter[int]
    # From the due time, and from the time the request was written to its connection.
    latencies: list[float]
    service_times: list[float]
    # Event loop time of each response, in the order of ``latencies``.
    completed_at: list[float]
    lost_connections: int
    # Event loop time when sampling started.
    started: float = 0.0

    def percentile(self, fraction: float, values: list[float] | None = None) -> float:
        ordered = sorted(self.latencies if values is None else values)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class OpenLoopGenerator:
    """Send requests at a fixed rate over a pool of connections, whatever the response times.

    Request i is due at start + i / rate. When every connection is waiting for a response,
    due requests queue here and go out as connections free up. Each latency runs from the
    due time to the end of the response, so queueing in the generator counts, as in wrk2.
    """

    def __init__(
        self, port: int, body: bytes, headers: dict[str, str], rate: float, connections: int
    ) -> None:
        head = [
            "POST /collect HTTP/1.1",
            f"Host: {HOST}:{port}",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        self.port = port
        self.rate = rate
        self.connection_count = connections
        self.idle: collections.deque[_Connection] = collections.deque()
        self.backlog: collections.deque[float] = collections.deque()
        self.latencies: list[float] = []
        self.service_times: list[float] = []
        self.completed_at: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.lost_connections = 0
        self.sent = 0
        self.completed = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, seconds: float) -> OpenLoopResult:
        loop = asyncio.get_running_loop()
        self._loop = loop
        connections = []
        for _ in range(self.connection_count):
            _, protocol = await loop.create_connection(lambda: _Connection(self), HOST, self.port)
            connections.append(protocol)
        self.idle.extend(connections)

        total = int(self.rate * seconds)
        start = loop.time() + 0.01
        index = 0
        while index < total:
            due_count = min(total, int((loop.time() - start) * self.rate) + 1)
            while index < due_count:
                self._dispatch(start + index / self.rate)
                index += 1
            await asyncio.sleep(max(0.0, start + index / self.rate - loop.time()))

        # Wait for the last responses, at most 10 s past the schedule.
        drain_deadline = loop.time() + 10.0
        while self.completed < self.sent and loop.time() < drain_deadline:
            await asyncio.sleep(0.01)
        elapsed = loop.time() - start
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
        return OpenLoopResult(
            target_rate=self.rate,
            seconds=elapsed,
            sent=self.sent,
            completed=self.completed,
            statuses=self.statuses,
            latencies=self.latencies,
            service_times=self.service_times,
            completed_at=self.completed_at,
            lost_connections=self.lost_connections,
        )

    def _dispatch(self, due_at: float) -> None:
        self.sent += 1
        if self.idle:
            assert self._loop is not None
            self.idle.popleft().send(due_at, self._loop.time())
        else:
            self.backlog.append(due_at)

    def on_response(self, connection: _Connection, status: int) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.latencies.append(now - connection.due_at)
        self.service_times.append(now - connection.sent_at)
        self.completed_at.append(now)
        self.statuses[status] += 1
        self.completed += 1
        if self.backlog:
            connection.send(self.backlog.popleft(), now)
        else:
            self.idle.append(connection)

    def on_connection_lost(self, connection: _Connection, exc: Exception | None) -> None:
        if connection in self.idle:
            self.idle.remove(connection)
        self.lost_connections += 1


# Scenarios


@dataclass
class Options:
    duration: float
    warmup: float
    connections: int
    wrk_threads: int
    server_core: int
    load_core: int
    max_other_share: float = 0.10
    attempts: int = 3


@dataclass
class Measurement:
    scenario: str
    events_per_request: int
    wrk: WrkResult | None = None
    cpu_seconds: float = 0.0
    peak_rss_kib: int = 0
    pubsub_cpu_seconds: float | None = None
    # CPU time of the server core used by any process, including the server.
    core_busy_seconds: float = 0.0
    # CPU time of the load core used by processes other than wrk, this script and the test server.
    load_core_others_seconds: float = 0.0
    stored_events: int | None = None
    expected_events: int = 0
    attempts: int = 1
    error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def interference(self) -> float:
        """The share of the server core that other processes used during the wrk run.

        Other processes on the load core are reported but not counted here: they slow the
        load generator only when that core has no idle time left.
        """
        if self.wrk is None or not self.wrk.seconds:
            return 0.0
        return max(0.0, self.core_busy_seconds - self.cpu_seconds) / self.wrk.seconds

    @property
    def paced_interference(self) -> float:
        """The share of the server core that other processes used during the paced run."""
        paced: OpenLoopResult = self.extra["paced"]  # type: ignore[assignment]
        others = max(0.0, self.core_busy_seconds - self.cpu_seconds)
        return others / paced.seconds if paced.seconds else 0.0

    @property
    def events_per_second(self) -> float:
        return self.wrk.requests_per_second * self.events_per_request if self.wrk else 0.0

    @property
    def events(self) -> int:
        return self.wrk.requests * self.events_per_request if self.wrk else 0


class Bench:
    """A work folder with the keys file, request bodies and wrk scripts for one run."""

    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.key = add_key(
            workdir / "keys.json", "bench", "browser", [ORIGIN], rate_limit=UNREACHABLE_LIMIT
        )
        self.headers = {
            "Content-Type": "application/json",
            "X-API-Key": self.key,
            "Origin": ORIGIN,
            "User-Agent": USER_AGENT,
        }
        self.bodies: dict[int, bytes] = {}
        self.scripts: dict[int, Path] = {}

    def body(self, events_per_request: int) -> bytes:
        if events_per_request not in self.bodies:
            body = make_body(events_per_request)
            body_path = self.workdir / f"body-{events_per_request}.json"
            body_path.write_bytes(body)
            script = self.workdir / f"post-{events_per_request}.lua"
            write_wrk_script(script, body_path, self.headers)
            self.bodies[events_per_request] = body
            self.scripts[events_per_request] = script
        return self.bodies[events_per_request]

    @contextlib.contextmanager
    def running(
        self, scenario: str, events_per_request: int
    ) -> Iterator[tuple[Server, PubSubServer | None]]:
        """Start the scenario's servers in a fresh folder, and stop them on exit."""
        folder = Path(tempfile.mkdtemp(prefix=f"{scenario}-", dir=self.workdir))
        shutil.copy(self.workdir / "keys.json", folder / "keys.json")
        body = self.body(events_per_request)
        pubsub: PubSubServer | None = None
        server: Server | None = None
        try:
            if scenario.endswith("pubsub"):
                pubsub = PubSubServer(folder, self.options.load_core)
            port = free_port()
            spec = server_spec(scenario, folder, port, pubsub)
            server = Server(scenario, spec, port, folder, self.options.server_core)
            server.wait_ready(body, self.headers)
            yield server, pubsub
        finally:
            if server is not None:
                server.stop()
            if pubsub is not None:
                pubsub.stop()

    def wrk(self, server: Server, events_per_request: int, seconds: float) -> WrkResult:
        options = self.options
        try:
            result = run_wrk(
                server.url,
                self.scripts[events_per_request],
                options.connections,
                seconds,
                options.load_core,
                options.wrk_threads,
            )
        except ScenarioFailed:
            server.check_running()
            raise
        server.check_running()
        check_wrk(f"{server.name}, {events_per_request} events/request", result)
        return result

    def measure(self, scenario: str, events_per_request: int) -> Measurement:
        """Warm up, then measure the maximum rate with wrk and the server's CPU and memory."""
        with self.running(scenario, events_per_request) as (server, pubsub):
            # The readiness check stored one request too.
            requests = self.wrk(server, events_per_request, self.options.warmup).requests + 1
            result, measured = self._least_disturbed(scenario, events_per_request, server, pubsub)
            server.check_running()
            result.peak_rss_kib = process_memory_kib(server.pid, "VmHWM")
            result.expected_events = (requests + measured) * events_per_request
        stored = pubsub.published if pubsub is not None else server.stored_events()
        result.stored_events = stored
        if stored is not None and stored < result.expected_events:
            raise ScenarioFailed(
                f"{scenario}: {stored} events stored, but {result.expected_events} were "
                "acknowledged with status 200"
            )
        return result

    def _least_disturbed(
        self, scenario: str, events_per_request: int, server: Server, pubsub: PubSubServer | None
    ) -> tuple[Measurement, int]:
        """Measure with wrk until other processes use at most max_other_share of the server core.

        Makes at most ``attempts`` measurements and returns the one with the least
        interference, with the number of requests that all of them sent.
        """
        options = self.options
        best: Measurement | None = None
        requests = 0
        for attempt in range(1, options.attempts + 1):
            candidate = self._measure_once(scenario, events_per_request, server, pubsub)
            candidate.attempts = attempt
            assert candidate.wrk is not None
            requests += candidate.wrk.requests
            if best is None or candidate.interference < best.interference:
                best = candidate
            if candidate.interference <= options.max_other_share:
                break
            _report_interference(candidate.interference, attempt < options.attempts)
        assert best is not None
        return best, requests

    def _measure_once(
        self, scenario: str, events_per_request: int, server: Server, pubsub: PubSubServer | None
    ) -> Measurement:
        """Run wrk once, and count the CPU time of the server and of everything else."""
        options = self.options
        result = Measurement(scenario, events_per_request)
        server_before = process_cpu_seconds(server.pid)
        pubsub_before = process_cpu_seconds(pubsub.pid) if pubsub else 0.0
        server_core_before = core_busy_seconds(options.server_core)
        load_core_before = core_busy_seconds(options.load_core)
        own_before = own_cpu_seconds()
        result.wrk = self.wrk(server, events_per_request, options.duration)
        result.cpu_seconds = process_cpu_seconds(server.pid) - server_before
        result.core_busy_seconds = core_busy_seconds(options.server_core) - server_core_before
        pubsub_seconds = process_cpu_seconds(pubsub.pid) - pubsub_before if pubsub else 0.0
        if pubsub is not None:
            result.pubsub_cpu_seconds = pubsub_seconds
        # On the load core run wrk, the Pub/Sub test server and this script.
        load_core_busy = core_busy_seconds(options.load_core) - load_core_before
        ours = own_cpu_seconds() - own_before + pubsub_seconds
        result.load_core_others_seconds = max(0.0, load_core_busy - ours)
        return result

    def measure_paced(
        self,
        scenario: str,
        events_per_request: int,
        fraction: float,
        seconds: float,
        sample: float,
        attempts: int,
    ) -> Measurement:
        """Measure the maximum rate with wrk, then run the open-loop generator at ``fraction``.

        Samples the server's RSS and CPU every ``sample`` seconds during the paced run. Like
        the maximum, the paced run is repeated up to ``attempts`` times while other processes
        use more than ``max_other_share`` of the server core.
        """
        with self.running(scenario, events_per_request) as (server, pubsub):
            self.wrk(server, events_per_request, self.options.warmup)
            maximum, _ = self._least_disturbed(scenario, events_per_request, server, pubsub)
            assert maximum.wrk is not None
            rate = maximum.wrk.requests_per_second * fraction
            best: Measurement | None = None
            for attempt in range(1, attempts + 1):
                candidate = self._paced_once(maximum, server, rate, seconds, sample)
                candidate.attempts = attempt
                if best is None or candidate.paced_interference < best.paced_interference:
                    best = candidate
                if candidate.paced_interference <= self.options.max_other_share:
                    break
                _report_interference(candidate.paced_interference, attempt < attempts)
            assert best is not None
            best.extra["fraction"] = fraction
            server.check_running()
            best.peak_rss_kib = process_memory_kib(server.pid, "VmHWM")
        return best

    def _paced_once(
        self, maximum: Measurement, server: Server, rate: float, seconds: float, sample: float
    ) -> Measurement:
        result = Measurement(maximum.scenario, maximum.events_per_request, wrk=maximum.wrk)
        generator = OpenLoopGenerator(
            server.port,
            self.body(maximum.events_per_request),
            self.headers,
            rate,
            self.options.connections,
        )
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            paced, samples = runner.run(
                _run_sampled(generator, seconds, server, sample, self.options.server_core)
            )
        result.cpu_seconds = samples[-1].server_cpu_seconds - samples[0].server_cpu_seconds
        result.core_busy_seconds = samples[-1].core_busy_seconds - samples[0].core_busy_seconds
        result.extra = {"paced": paced, "samples": samples}
        failed = sum(count for status, count in paced.statuses.items() if status != 200)
        if failed or paced.completed < paced.sent or paced.lost_connections:
            raise ScenarioFailed(
                f"{maximum.scenario} at {rate:.0f} requests/s: {paced.completed} of {paced.sent} "
                f"requests completed, statuses {dict(paced.statuses)}, "
                f"{paced.lost_connections} connections lost"
            )
        return result


def _loop_factory() -> Any:
    """Return uvloop's loop factory when it is installed: the generator shares a core with the
    Pub/Sub test server, and uvloop needs less CPU per request than asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def measure_with_restart(bench: Bench, scenario: str, events_per_request: int) -> Measurement:
    """Measure a scenario, starting it once more if its server was stopped from outside."""
    try:
        return bench.measure(scenario, events_per_request)
    except ServerExited as exc:
        print(f"  {str(exc).splitlines()[0]}; starting the scenario again", flush=True)
        return bench.measure(scenario, events_per_request)


def _report_interference(share: float, again: bool) -> None:
    action = "measuring again in 5 s" if again else "keeping the least disturbed attempt"
    print(f"  other processes used {share:.0%} of a core during the measurement; {action}")
    if again:
        time.sleep(5)


@dataclass
class Sample:
    """The server's state at one moment of a paced run."""

    elapsed: float
    rss_kib: int
    server_cpu_seconds: float
    core_busy_seconds: float


async def _run_sampled(
    generator: OpenLoopGenerator, seconds: float, server: Server, interval: float, core: int
) -> tuple[OpenLoopResult, list[Sample]]:
    """Run ``generator``, sampling the server every ``interval`` seconds.

    Each sample also deletes rotated event files of the local sink.
    """
    samples: list[Sample] = []
    loop = asyncio.get_running_loop()
    started = loop.time()

    def take_sample() -> None:
        samples.append(
            Sample(
                loop.time() - started,
                process_memory_kib(server.pid, "VmRSS"),
                process_cpu_seconds(server.pid),
                core_busy_seconds(core),
            )
        )

    async def sample_periodically() -> None:
        while True:
            await asyncio.sleep(interval)
            take_sample()
            remove_rotated_files(server.spec.events_folder)

    take_sample()
    sampler = asyncio.create_task(sample_periodically())
    try:
        result = await generator.run(seconds)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    take_sample()
    result.started = started
    return result, samples


def remove_rotated_files(folder: Path | None) -> None:
    """Delete all but the newest event file, so a long run does not fill the disk."""
    if folder is None:
        return
    files = sorted(folder.glob("*.ndjson"), key=lambda path: path.stat().st_mtime)
    for path in files[:-1]:
        path.unlink(missing_ok=True)


# Reporting


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}" if base else "–"


def format_table(results: list[Measurement]) -> str:
    ceiling = {
        m.events_per_request: m.wrk.requests_per_second
        for m in results
        if m.scenario == "ceiling" and m.wrk and not m.error
    }
    by_key = {(m.scenario, m.events_per_request): m for m in results if not m.error}
    lines = [
        "| scenario | events/request | requests/s | events/s | p50 ms | p99 ms "
        "| server CPU µs/event | peak RSS MiB | requests/s vs ceiling "
        "| events/s vs obvious (same sink) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in results:
        if m.error or m.wrk is None:
            lines.append(
                f"| {m.scenario} | {m.events_per_request} | FAILED: {m.error} | | | | | | | |"
            )
            continue
        obvious = by_key.get((OBVIOUS_FOR.get(m.scenario, ""), m.events_per_request))
        cpu_per_event = m.cpu_seconds / m.events * 1e6 if m.events else float("nan")
        lines.append(
            f"| {m.scenario} | {m.events_per_request} | {m.wrk.requests_per_second:,.0f} "
            f"| {m.events_per_second:,.0f} | {_ms(m.wrk.p50)} | {_ms(m.wrk.p99)} "
            f"| {cpu_per_event:.1f} | {m.peak_rss_kib / 1024:.0f} "
            f"| {_ratio(m.wrk.requests_per_second, ceiling.get(m.events_per_request))} "
            f"| {_ratio(m.events_per_second, obvious.events_per_second if obvious else None)} |"
        )
    return "\n".join(lines)


def format_details(results: list[Measurement]) -> str:
    lines = [
        "| scenario | events/request | requests | events stored (expected at least) "
        "| wrk socket errors | Pub/Sub test server CPU µs/event "
        "| server core used by the server / by other processes "
        "| load core used by other processes | attempts | events per server CPU-second |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in results:
        if m.error or m.wrk is None:
            continue
        stored = "–" if m.stored_events is None else f"{m.stored_events:,} ({m.expected_events:,})"
        errors = ", ".join(f"{k} {v}" for k, v in m.wrk.socket_errors.items() if v) or "none"
        pubsub = (
            f"{m.pubsub_cpu_seconds / m.events * 1e6:.1f}"
            if m.pubsub_cpu_seconds is not None and m.events
            else "–"
        )
        seconds = m.wrk.seconds
        others = max(0.0, m.core_busy_seconds - m.cpu_seconds)
        lines.append(
            f"| {m.scenario} | {m.events_per_request} | {m.wrk.requests:,} | {stored} "
            f"| {errors} | {pubsub} | {m.cpu_seconds / seconds:.0%} / {others / seconds:.0%} "
            f"| {m.load_core_others_seconds / seconds:.0%} | {m.attempts} "
            f"| {m.events / m.cpu_seconds:,.0f} |"
        )
    return "\n".join(lines)


def format_paced(m: Measurement) -> str:
    paced: OpenLoopResult = m.extra["paced"]  # type: ignore[assignment]
    assert m.wrk is not None
    achieved = paced.completed / paced.seconds if paced.seconds else 0.0
    cpu_per_event = m.cpu_seconds / (paced.completed * m.events_per_request) * 1e6
    lines = [
        f"{m.scenario}, {m.events_per_request} events/request: maximum "
        f"{m.wrk.requests_per_second:,.0f} requests/s (wrk); paced at "
        f"{m.extra['fraction']:.0%} = {paced.target_rate:,.0f} requests/s "
        f"({paced.target_rate * m.events_per_request:,.0f} events/s) for "
        f"{paced.seconds:.0f} s, achieved {achieved:,.0f} requests/s, "
        f"{paced.completed:,} requests (attempt {m.attempts}), server CPU "
        f"{cpu_per_event:.1f} µs/event. The server "
        f"used {m.cpu_seconds / paced.seconds:.0%} of its core and other processes "
        f"{max(0.0, m.core_busy_seconds - m.cpu_seconds) / paced.seconds:.0%}.",
        "",
        "| latency measured from | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, values in (
        ("due time (open loop)", paced.latencies),
        ("write to the connection", paced.service_times),
    ):
        cells = " | ".join(
            _ms(paced.percentile(fraction, values)) for fraction in (0.5, 0.9, 0.99, 0.999, 1.0)
        )
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def format_soak(m: Measurement) -> tuple[str, bool]:
    """Describe the server's RSS over the paced run; True when it did not grow.

    The sample taken as the paced run starts still reflects the wrk run at the maximum rate, so
    it is left out. RSS goes up and down with the requests in flight, so growth is judged on
    peaks: the peak of the last third of the samples must be within SOAK_TOLERANCE of the
    peak of the first third.
    """
    samples: list[Sample] = m.extra["samples"]  # type: ignore[assignment]
    values = [sample.rss_kib for sample in samples[1:]]
    if len(values) < 3:
        return f"only {len(values)} RSS samples; run the soak for at least 3 intervals", False
    third = len(values) // 3
    early, late = max(values[:third]), max(values[-third:])
    flat = late <= early * (1 + SOAK_TOLERANCE)
    interval = samples[2].elapsed - samples[1].elapsed
    text = (
        f"RSS over {len(values)} samples {interval:.0f} s apart: first {values[0] / 1024:.1f} "
        f"MiB, last {values[-1] / 1024:.1f} MiB, min {min(values) / 1024:.1f} MiB, max "
        f"{max(values) / 1024:.1f} MiB. Peak of the first third {early / 1024:.1f} MiB, of the "
        f"last third {late / 1024:.1f} MiB ({late / early - 1:+.1%}); within "
        f"{SOAK_TOLERANCE:.0%}: {'yes' if flat else 'no'}"
    )
    return text, flat


def format_timeline(m: Measurement) -> str:
    """Tabulate each sampling interval: responses, p99, the server core's use, and RSS."""
    paced: OpenLoopResult = m.extra["paced"]  # type: ignore[assignment]
    samples: list[Sample] = m.extra["samples"]  # type: ignore[assignment]
    lines = [
        "| interval end s | responses | p99 ms (from due time) | server CPU % "
        "| other processes on the server core % | RSS MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for before, after in zip(samples, samples[1:], strict=False):
        low, high = paced.started + before.elapsed, paced.started + after.elapsed
        window = [
            latency
            for latency, done in zip(paced.latencies, paced.completed_at, strict=True)
            if low <= done < high
        ]
        seconds = after.elapsed - before.elapsed
        server = after.server_cpu_seconds - before.server_cpu_seconds
        others = max(0.0, after.core_busy_seconds - before.core_busy_seconds - server)
        lines.append(
            f"| {after.elapsed:.0f} | {len(window):,} | {_ms(paced.percentile(0.99, window))} "
            f"| {server / seconds:.0%} | {others / seconds:.0%} | {after.rss_kib / 1024:.1f} |"
        )
    return "\n".join(lines)


def median_measurement(measured: list[Measurement]) -> Measurement:
    """Return the measurement with the median request rate (the lower middle of an even count).

    Failed measurements count as the slowest, so a scenario that failed in most rounds
    reports its failure.
    """

    def rate(m: Measurement) -> float:
        return m.wrk.requests_per_second if m.wrk is not None and not m.error else -1.0

    ordered = sorted(measured, key=rate)
    return ordered[(len(ordered) - 1) // 2]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _round_rates(
    rounds: dict[tuple[str, int], list[Measurement]], scenario: str, events: int, per_event: bool
) -> list[float | None]:
    rates: list[float | None] = []
    for m in rounds.get((scenario, events), []):
        if m.error or m.wrk is None:
            rates.append(None)
        else:
            rates.append(m.events_per_second if per_event else m.wrk.requests_per_second)
    return rates


def round_ratios(
    rounds: dict[tuple[str, int], list[Measurement]],
    numerator: tuple[str, int, bool],
    denominator: tuple[str, int, bool],
) -> list[float]:
    """Return numerator / denominator for each round in which both were measured."""
    tops = _round_rates(rounds, *numerator)
    bottoms = _round_rates(rounds, *denominator)
    return [
        top / bottom
        for top, bottom in zip(tops, bottoms, strict=False)
        if top is not None and bottom
    ]


def format_rounds(rounds: dict[tuple[str, int], list[Measurement]]) -> str:
    """Return a table of every round's request rate, for the spread behind the medians."""
    count = max(len(measured) for measured in rounds.values())
    header = " | ".join(f"round {number}" for number in range(1, count + 1))
    lines = [
        f"| scenario | events/request | {header} | spread |",
        "| --- | ---: |" + " ---: |" * count + " ---: |",
    ]
    for scenario, events in rounds:
        rates = _round_rates(rounds, scenario, events, False)
        cells = " | ".join("failed" if rate is None else f"{rate:,.0f}" for rate in rates)
        valid = [rate for rate in rates if rate is not None]
        spread = f"{(max(valid) - min(valid)) / _median(valid):.0%}" if valid else "–"
        lines.append(f"| {scenario} | {events} | {cells} | {spread} |")
    return "requests/s in each round; spread is (max - min) / median:\n\n" + "\n".join(lines)


def _ratio_text(ratios: list[float], unit: str = "") -> str:
    values = ", ".join(f"{ratio:.2f}{unit}" for ratio in ratios)
    if len(ratios) == 1:
        return values
    return f"{_median(ratios):.2f}{unit} (median of rounds: {values})"


def check_goals(
    rounds: dict[tuple[str, int], list[Measurement]],
    paced: Measurement | None,
    soak: tuple[Measurement, bool] | None,
) -> list[str]:
    """Compare the goals with medians over rounds; ratios are taken within each round."""
    goals = []
    ratios = round_ratios(rounds, ("collector-local", 1, False), ("ceiling", 1, False))
    if ratios:
        met = _median(ratios) >= GOAL_CEILING_RATIO
        goals.append(
            f"1 event/request, local sink ≥ {GOAL_CEILING_RATIO} of the ceiling's requests/s: "
            f"{_ratio_text(ratios)} — {'met' if met else 'not met'}"
        )
    local_events = [
        rate for rate in _round_rates(rounds, "collector-local", 20, True) if rate is not None
    ]
    if local_events:
        median = _median(local_events)
        values = ", ".join(f"{rate:,.0f}" for rate in local_events)
        goals.append(
            f"20 events/request, local sink ≥ {GOAL_LOCAL_EVENTS_PER_SECOND:,} events/s: "
            f"{median:,.0f} (rounds: {values}) — "
            f"{'met' if median >= GOAL_LOCAL_EVENTS_PER_SECOND else 'not met'}"
        )
    ratios = round_ratios(rounds, ("collector-pubsub", 20, True), ("obvious-pubsub", 20, True))
    if ratios:
        met = _median(ratios) >= GOAL_PUBSUB_RATIO
        goals.append(
            f"20 events/request, Pub/Sub sink ≥ {GOAL_PUBSUB_RATIO:g}× the obvious "
            f"implementation's events/s: {_ratio_text(ratios, '×')} — "
            f"{'met' if met else 'not met'}"
        )
    if paced is not None and not paced.error:
        result: OpenLoopResult = paced.extra["paced"]  # type: ignore[assignment]
        p99 = result.percentile(0.99)
        goals.append(
            f"Pub/Sub sink p99 < {GOAL_P99_SECONDS * 1000:.0f} ms at "
            f"{paced.extra['fraction']:.0%} of the maximum rate: {_ms(p99)} ms — "
            f"{'met' if p99 < GOAL_P99_SECONDS else 'not met'}"
        )
    if soak is not None:
        measurement, flat = soak
        soaked: OpenLoopResult = measurement.extra["paced"]  # type: ignore[assignment]
        goals.append(
            f"{measurement.scenario} peak RSS of the last third within {SOAK_TOLERANCE:.0%} of "
            f"the first third's over {soaked.seconds:.0f} s "
            f"at {measurement.extra['fraction']:.0%} of the maximum rate — "
            f"{'met' if flat else 'not met'}"
        )
    return goals


def describe_machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = process_free_memory()
    versions = ", ".join(
        f"{name} {_version(name)}"
        for name in (
            "uvicorn",
            "uvloop",
            "httptools",
            "fastapi",
            "pydantic",
            "msgspec",
            "orjson",
            "google-cloud-pubsub",
        )
    )
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return (
        f"{os.cpu_count()} CPUs ({model}), {memory}, Linux {platform.release()}; "
        f"Python {platform.python_version()}, {versions}; {' '.join(wrk.split()[:2])}"
    )


def process_free_memory() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB memory"
    return "unknown memory"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe_code() -> str:
    """Return the commit and whether the working tree has changes, as git describes them."""
    completed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        return "not a git checkout"
    described = completed.stdout.strip()
    if described.endswith("-dirty"):
        return f"commit {described.removesuffix('-dirty')} with uncommitted changes"
    return f"commit {described}"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# Profiling


def profile_collector(bench: Bench, py_spy: str, raw: Path, events_per_request: int) -> str:
    """Record the local-sink collector under wrk load with py-spy and summarize the samples.

    py-spy writes its samples to ``raw`` as collapsed stacks, the input of flamegraph tools.
    """
    options = bench.options
    with bench.running("collector-local", events_per_request) as (server, _):
        bench.wrk(server, events_per_request, options.warmup)
        spy = subprocess.Popen(
            ["taskset", "-c", str(options.load_core), py_spy, "record", "--pid", str(server.pid)]
            + ["--duration", f"{options.duration:g}", "--rate", "250", "--nonblocking", "--threads"]
            + ["--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            time.sleep(0.5)
            bench.wrk(server, events_per_request, options.duration)
            _, errors = spy.communicate(timeout=options.duration + 30)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
        if spy.returncode != 0:
            raise ScenarioFailed(f"py-spy failed: {errors.decode(errors='replace')}")
    return summarize_profile(raw)


def summarize_profile(raw: Path, top: int = 15) -> str:
    """Return markdown tables of the event loop's busiest functions and of samples per thread.

    Each line of py-spy's raw format with --threads is ``thread (TID): NAME;frame;...;frame
    COUNT``, from the thread's root to the running frame, each frame written as
    ``function (file:line)``. The event loop runs in MainThread.
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    thread_leaves: dict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        # Numbered threads (uvloop_0, Thread-12) count as one group per name.
        thread = re.sub(r"([-_])\d+$", r"\1N", thread.split(": ", 1)[-1])
        threads[thread] += count
        if not frames:
            continue
        names = [_function_name(frame) for frame in frames]
        thread_leaves[thread][names[-1]] += count
        if thread == "MainThread":
            own[names[-1]] += count
            for name in set(names):
                inclusive[name] += count
    total = sum(threads.values())
    main = threads["MainThread"]
    if not main:
        return "py-spy recorded no samples of MainThread"
    lines = [
        f"MainThread (the event loop): {main:,} samples. Own: the function itself was "
        "running (time in C code that it called counts as its own). Inclusive: it was on "
        "the stack.",
        "",
        "| function | own % | inclusive % |",
        "| --- | ---: | ---: |",
    ]
    for name, count in own.most_common(top):
        lines.append(f"| `{name}` | {count / main:.1%} | {inclusive[name] / main:.1%} |")
    lines += ["", "| thread | % of all samples | most frequent running function |"]
    lines.append("| --- | ---: | --- |")
    for thread, count in threads.most_common():
        leaf, _ = thread_leaves[thread].most_common(1)[0] if thread_leaves[thread] else ("", 0)
        lines.append(f"| {thread} | {count / total:.1%} | `{leaf}` |")
    return "\n".join(lines)


def _function_name(frame: str) -> str:
    """Turn ``func (path/to/file.py:12)`` into ``func (file.py)``."""
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if match is None:
        return frame
    return f"{match.group(1)} ({_short_path(match.group(2))})"


def _short_path(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", str(REPO_ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return Path(path).name


# Command line


def _add_measurement_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenarios",
        default="all",
        help="comma-separated scenarios, 'all' or 'none' (default: all): "
        + ", ".join(SCENARIO_NAMES),
    )
    parser.add_argument(
        "--events", default="1,20", help="events per request, comma-separated (default: 1,20)"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds measured per scenario (default: 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of unmeasured load first (default: 2)"
    )
    parser.add_argument(
        "--connections", type=int, default=128, help="HTTP connections (default: 128)"
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default: 1)")
    parser.add_argument(
        "--server-core", type=int, default=0, help="CPU the server runs on (default: 0)"
    )
    parser.add_argument(
        "--load-core",
        type=int,
        default=1,
        help="CPU for wrk, the Pub/Sub test server and this script (default: 1)",
    )
    parser.add_argument(
        "--max-other-share",
        type=float,
        default=0.10,
        metavar="FRACTION",
        help="repeat a measurement when other processes used more than this share of the "
        "server core (default: 0.10)",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="measurements per scenario at most, keeping the least disturbed (default: 3)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure every scenario this many times, one round after another, and report "
        "medians (default: 3)",
    )


def _add_mode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--latency-at",
        type=float,
        metavar="FRACTION",
        help="also measure latency of the Pub/Sub sink at 20 events/request with the open-loop "
        "generator at this fraction of its maximum rate, for --duration seconds",
    )
    parser.add_argument(
        "--soak",
        type=float,
        nargs="?",
        const=300.0,
        metavar="SECONDS",
        help="also run the --soak-sink collector at --soak-fraction of its maximum rate for "
        "SECONDS (default 300) and report its RSS",
    )
    parser.add_argument(
        "--soak-sink",
        choices=["pubsub", "local"],
        default="pubsub",
        help="sink of the soak run (default: pubsub)",
    )
    parser.add_argument(
        "--soak-fraction",
        type=float,
        default=0.7,
        help="fraction of the maximum rate for the soak run (default: 0.7)",
    )
    parser.add_argument(
        "--soak-interval", type=float, default=5.0, help="seconds between RSS samples (default: 5)"
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="also report each sampling interval of the paced runs: p99, CPU use and RSS",
    )
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="py-spy executable: also profile the local-sink collector for --duration seconds; "
        "with --output, the samples are kept next to it as OUTPUT.py-spy.txt",
    )
    parser.add_argument(
        "--profile-events",
        type=int,
        default=20,
        help="events per request of the profiled run (default: 20)",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_measurement_arguments(parser)
    _add_mode_arguments(parser)
    parser.add_argument("--output", type=Path, help="also write the report to this markdown file")
    args = parser.parse_args(argv)
    if args.scenarios == "all":
        args.scenario_list = list(SCENARIO_NAMES)
    elif args.scenarios == "none":
        args.scenario_list = []
    else:
        args.scenario_list = args.scenarios.split(",")
        unknown = set(args.scenario_list) - set(SCENARIO_NAMES)
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    try:
        args.event_counts = [int(value) for value in args.events.split(",")]
    except ValueError:
        parser.error(f"--events must be comma-separated integers, got {args.events!r}")
    if args.latency_at is not None and not 0 < args.latency_at <= 1:
        parser.error("--latency-at must be a fraction in (0, 1]")
    if not 0 < args.soak_fraction <= 1:
        parser.error("--soak-fraction must be a fraction in (0, 1]")
    usable = os.sched_getaffinity(0)
    if args.server_core == args.load_core or not {args.server_core, args.load_core} <= usable:
        parser.error(
            f"--server-core and --load-core must be two different CPUs of {sorted(usable)}"
        )
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed; install it (Debian: apt-get install {tool})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = Options(
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        wrk_threads=args.wrk_threads,
        server_core=args.server_core,
        load_core=args.load_core,
        max_other_share=args.max_other_share,
        attempts=args.attempts,
    )
    # This script's own work (the open-loop generator, sampling) stays off the server core.
    os.sched_setaffinity(0, {options.load_core})
    report = [
        f"Machine: {describe_machine()}",
        f"Code: {describe_code()}",
        f"Load average at start (1, 5, 15 min): {load_average()}",
        f"Command: python bench/run.py {' '.join(sys.argv[1:] if argv is None else argv)}",
        f"Server on CPU {options.server_core}; wrk ({options.wrk_threads} thread, "
        f"{options.connections} connections) and the Pub/Sub test server on CPU "
        f"{options.load_core}; {options.warmup:g} s warm-up, {options.duration:g} s measured.",
    ]
    print("\n".join(report), flush=True)
    failures = 0
    workdir = Path(tempfile.mkdtemp(prefix="collector-bench-"))
    try:
        bench = Bench(options, workdir)
        rounds: dict[tuple[str, int], list[Measurement]] = collections.defaultdict(list)
        for number in range(1, args.rounds + 1):
            for scenario in args.scenario_list:
                for events in args.event_counts:
                    print(
                        f"round {number} of {args.rounds}: measuring {scenario}, "
                        f"{events} events/request ...",
                        flush=True,
                    )
                    try:
                        measurement = measure_with_restart(bench, scenario, events)
                    except ScenarioFailed as exc:
                        print(f"FAILED: {exc}", file=sys.stderr, flush=True)
                        error = str(exc).split("\n")[0]
                        measurement = Measurement(scenario, events, error=error)
                        failures += 1
                    rounds[(scenario, events)].append(measurement)
        results = [median_measurement(measured) for measured in rounds.values()]
        if results:
            tables = [format_table(results), format_details(results)]
            if args.rounds > 1:
                tables.append(format_rounds(rounds))
            report += ["", "\n\n".join(tables)]
            print("\n" + "\n\n".join(tables), flush=True)

        paced: Measurement | None = None
        if args.latency_at is not None:
            print(f"measuring latency at {args.latency_at:.0%} of the maximum ...", flush=True)
            try:
                paced = bench.measure_paced(
                    "collector-pubsub", 20, args.latency_at, options.duration, 1.0, args.attempts
                )
            except ScenarioFailed as exc:
                print(f"FAILED: {exc}", file=sys.stderr, flush=True)
                failures += 1
            else:
                text = format_paced(paced)
                if args.timeline:
                    text += "\n\n" + format_timeline(paced)
                report += ["", text]
                print("\n" + text, flush=True)

        soak_result: tuple[Measurement, bool] | None = None
        if args.soak is not None:
            scenario = f"collector-{args.soak_sink}"
            print(f"soak: {scenario} for {args.soak:g} s ...", flush=True)
            try:
                soak = bench.measure_paced(
                    scenario, 20, args.soak_fraction, args.soak, args.soak_interval, 1
                )
            except ScenarioFailed as exc:
                print(f"FAILED: {exc}", file=sys.stderr, flush=True)
                failures += 1
            else:
                memory, flat = format_soak(soak)
                soak_result = (soak, flat)
                text = format_paced(soak) + "\n\n" + memory
                if args.timeline:
                    text += "\n\n" + format_timeline(soak)
                report += ["", text]
                print("\n" + text, flush=True)

        goals = check_goals(rounds, paced, soak_result)
        if goals:
            report += ["", *(f"- {goal}" for goal in goals)]
            print("\n" + "\n".join(goals), flush=True)

        if args.py_spy:
            print(
                f"profiling collector-local, {args.profile_events} events/request ...", flush=True
            )
            try:
                raw = (
                    args.output.with_suffix(".py-spy.txt")
                    if args.output
                    else workdir / "py-spy.txt"
                )
                text = profile_collector(bench, args.py_spy, raw, args.profile_events)
            except ScenarioFailed as exc:
                print(f"FAILED: {exc}", file=sys.stderr, flush=True)
                failures += 1
            else:
                report += ["", text]
                print("\n" + text, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    end_load = f"Load average at end (1, 5, 15 min): {load_average()}"
    report.append("\n" + end_load)
    print(end_load)
    if args.output:
        args.output.write_text("\n".join(report) + "\n")
    if failures:
        print(f"{failures} measurement(s) failed; see the messages above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
