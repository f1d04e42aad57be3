"""Measure the throughput and CPU cost per message of the collector's PubSubSink.

Drives ``collector.sinks.pubsub.PubSubSink`` directly from concurrent coroutines, as the
request handler does, against the Pub/Sub test server of tests/pubsub_server run in a
subprocess. Client CPU is time.process_time() of this process over the timed part, so the
server's CPU is not included (it is read from /proc and reported apart, Linux only). Run from
the repository root:

    python bench/pubsub_sink_cost.py --messages 100000

Each scenario ``PxC`` publishes --messages rows of about 600 bytes in publish() calls of P
messages each, with C calls waiting at a time (C concurrent requests in the collector), on
the uvloop or asyncio event loop. The Message objects are built before the timed part, as
the handler builds them before it calls the sink. Settings are the collector's defaults
(500 messages or 5 ms per batch).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import orjson  # noqa: E402
import uvloop  # noqa: E402
from google.cloud import pubsub_v1  # noqa: E402

from collector.enrich import ROW_COLUMNS  # noqa: E402
from collector.settings import Settings  # noqa: E402
from collector.sinks.base import Message  # noqa: E402
from collector.sinks.pubsub import PubSubSink  # noqa: E402

PROJECT = "projects/bench-project"
WARMUP_MESSAGES = 2000


def sample_row(index: int) -> bytes:
    """Return a row shaped like the collector's page_turned row, about 600 bytes."""
    row = {
        "event_id": f"8a6f0c1e-3b5d-4c8e-9f21-{index:012d}",
        "event_name": "page_turned",
        "occurred_at": "2026-12-04T10:00:00.000000Z",
        "sent_at": "2026-12-04T10:00:01.000000Z",
        "received_at": "2026-12-04T10:00:01.250000Z",
        "occurred_at_corrected": "2026-12-04T10:00:00.250000Z",
        "user_id": None,
        "anonymous_id": "anon-5f2c9a",
        "session_id": "session-81d0",
        "content": {
            "content_id": "book-424242",
            "content_type": "book",
            "title": "Moby-Dick",
            "author": "Herman Melville",
            "genre": None,
            "page_count": 600,
            "duration_seconds": None,
        },
        "context": {"page_url": "https://site.example/read/424242", "platform": "web"},
        "properties": {"page_number": 13, "page_count": 600, "direction": "forward"},
        "key_id": "web",
        "client_ip": "203.0.113.0",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537",
        "is_bot": False,
        "schema_version": "1",
    }
    assert tuple(row) == ROW_COLUMNS
    return orjson.dumps(row)


@dataclass
class Result:
    loop: str
    per_call: int
    callers: int
    messages: int
    wall_seconds: float
    client_cpu_seconds: float
    server_cpu_seconds: float
    batches: int


def process_cpu_seconds(pid: int) -> float:
    """Return user plus system CPU seconds of process ``pid``, read from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name, utime and stime are the 12th and 13th fields.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """The test server run as ``python -m tests.pubsub_server`` in a child process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.pubsub_server", "--port", "0", "--log-level", "WARNING"],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the test server exited before printing its ports")
        self.host_port = json.loads(line)["host_port"]

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()


def create_topic(topic: str) -> None:
    client = pubsub_v1.PublisherClient()
    try:
        client.create_topic(name=topic)
    finally:
        client.transport.close()


async def drive(sink: PubSubSink, calls: list[list[Message]], callers: int) -> None:
    """Publish every call's messages, with ``callers`` calls waiting at a time."""
    queue = iter(calls)

    async def caller() -> None:
        for messages in queue:
            await sink.publish(messages)

    await asyncio.gather(*(caller() for _ in range(callers)))


async def run_scenario(
    topic: str, messages: int, per_call: int, callers: int, server: ServerProcess
) -> tuple[float, float, float, int, int]:
    settings = Settings(sink="pubsub", pubsub_topic=topic)
    sink = PubSubSink(settings)
    await sink.start()
    if not sink.ready:
        raise RuntimeError(f"the sink is not ready for {topic}")
    rows = [sample_row(index) for index in range(per_call)]
    batch = [Message(row, "page_turned") for row in rows]
    warmup = [batch] * (WARMUP_MESSAGES // per_call)
    calls = [batch] * (messages // per_call)
    await drive(sink, warmup, callers)
    gc.collect()
    published_before = sink.counters["published_messages"]
    batches_before = sink.counters["published_batches"]
    server_start = server.cpu_seconds()
    wall_start = time.perf_counter()
    cpu_start = time.process_time()
    await drive(sink, calls, callers)
    cpu_seconds = time.process_time() - cpu_start
    wall_seconds = time.perf_counter() - wall_start
    server_seconds = server.cpu_seconds() - server_start
    published = sink.counters["published_messages"] - published_before
    batches = sink.counters["published_batches"] - batches_before
    await sink.close()
    if published != len(calls) * per_call:
        raise RuntimeError(f"published {published} messages, expected {len(calls) * per_call}")
    return wall_seconds, cpu_seconds, server_seconds, published, batches


def format_table(results: list[Result]) -> str:
    header = (
        f"{'loop':<8} {'per call':>8} {'callers':>7} {'messages':>8} {'wall s':>7} "
        f"{'msg/s':>8} {'msg/batch':>9} {'client CPU us/msg':>17} {'server CPU us/msg':>17}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        lines.append(
            f"{result.loop:<8} {result.per_call:>8} {result.callers:>7} {result.messages:>8} "
            f"{result.wall_seconds:>7.2f} {result.messages / result.wall_seconds:>8.0f} "
            f"{result.messages / result.batches:>9.0f} "
            f"{result.client_cpu_seconds / result.messages * 1e6:>17.1f} "
            f"{result.server_cpu_seconds / result.messages * 1e6:>17.1f}"
        )
    return "\n".join(lines)


def describe_machine() -> str:
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("google-cloud-pubsub", "grpcio", "protobuf", "proto-plus", "uvloop")
    )
    cpus = len(os.sched_getaffinity(0))
    return (
        f"Python {platform.python_version()} on {platform.machine()}, {cpus} usable CPUs, "
        f"{platform.processor() or platform.platform()}; {versions}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, default=100_000, help="messages per scenario (default: 100000)"
    )
    parser.add_argument(
        "--scenarios",
        default="1x200,10x200,100x200",
        help="comma-separated MESSAGESxCALLERS: messages per publish() call and calls waiting "
        "at once (default: 1x200,10x200,100x200)",
    )
    parser.add_argument(
        "--loops", default="uvloop,asyncio", help="event loops: uvloop, asyncio (default: both)"
    )
    args = parser.parse_args()

    server = ServerProcess()
    os.environ["PUBSUB_EMULATOR_HOST"] = server.host_port
    results = []
    try:
        for loop_name in args.loops.split(","):
            if loop_name not in ("uvloop", "asyncio"):
                parser.error(f"invalid event loop {loop_name!r}; expected uvloop or asyncio")
            for name in args.scenarios.split(","):
                per_call, callers = (int(value) for value in name.split("x"))
                topic = f"{PROJECT}/topics/sink-{loop_name}-{per_call}x{callers}"
                create_topic(topic)
                scenario = run_scenario(topic, args.messages, per_call, callers, server)
                runner = uvloop.run if loop_name == "uvloop" else asyncio.run
                wall, cpu, server_cpu, published, batches = runner(scenario)
                results.append(
                    Result(loop_name, per_call, callers, published, wall, cpu, server_cpu, batches)
                )
    finally:
        server.close()

    print(describe_machine())
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
