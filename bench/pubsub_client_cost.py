"""Measure the CPU cost per message of publishing with google-cloud-pubsub.

Publishes to the in-memory test server of tests/pubsub_server, started either
in this process (its CPU time counts as client CPU) or in a subprocess (its
CPU time is reported separately, read from /proc, so Linux only). Run from
the repository root:

    python bench/pubsub_client_cost.py --messages 50000

Scenarios:

- futures: high-level PublisherClient with default batch settings, keeping
  every publish future in a list and waiting on each at the end.
- callbacks: high-level PublisherClient with max_messages=500 and
  max_latency=0.01 s, counting results with add_done_callback.
- async: low-level PublisherAsyncClient.publish with 500 messages per call
  from asyncio, with --async-in-flight calls outstanding at a time.

Client CPU is time.process_time() of this process over the timed part,
which includes building the messages and waiting for every result.
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from google.cloud import pubsub_v1  # noqa: E402
from google.pubsub_v1 import types as gapic_types  # noqa: E402
from google.pubsub_v1.services.publisher import PublisherAsyncClient  # noqa: E402

from tests.pubsub_server import PubSubTestServer  # noqa: E402

PROJECT = "projects/bench-project"
# About the size of one analytics event serialized as JSON.
PAYLOAD = (
    b'{"event_type":"page_view","event_id":"8a6f0c1e-3b5d-4c8e-9f21-7d4a2b6c9e10",'
    b'"user_id":"u-000123456","session_id":"s-98765","ts":"2026-01-01T12:00:00.000Z",'
    b'"properties":{"book_id":"b-424242","chapter":7,"position":0.4375,'
    b'"device":"ios","app_version":"5.12.0"}}'
)
ATTRIBUTES = {"event_type": "page_view", "schema_version": "1"}
ASYNC_BATCH_SIZE = 500
WARMUP_MESSAGES = 1000


@dataclass
class Result:
    scenario: str
    server: str
    messages: int
    wall_seconds: float
    client_cpu_seconds: float
    server_cpu_seconds: float | None


def publish_keeping_futures(topic: str, count: int) -> None:
    publisher = pubsub_v1.PublisherClient()
    try:
        futures = [publisher.publish(topic, PAYLOAD, **ATTRIBUTES) for _ in range(count)]
        for future in futures:
            future.result(timeout=60)
    finally:
        publisher.stop()
        publisher.transport.close()


def publish_with_callbacks(topic: str, count: int) -> None:
    publisher = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.01)
    )
    lock = threading.Lock()
    all_done = threading.Event()
    state = {"done": 0, "failed": 0}

    def on_done(future) -> None:
        failed = future.exception() is not None
        with lock:
            state["done"] += 1
            state["failed"] += failed
            if state["done"] == count:
                all_done.set()

    try:
        for _ in range(count):
            publisher.publish(topic, PAYLOAD, **ATTRIBUTES).add_done_callback(on_done)
        if not all_done.wait(timeout=120):
            raise TimeoutError(f"only {state['done']} of {count} publishes finished")
    finally:
        publisher.stop()
        publisher.transport.close()
    if state["failed"]:
        raise RuntimeError(f"{state['failed']} of {count} publishes failed")


def publish_async(topic: str, count: int, in_flight: int) -> None:
    async def run() -> None:
        client = PublisherAsyncClient()
        semaphore = asyncio.Semaphore(in_flight)

        async def send(size: int) -> None:
            async with semaphore:
                messages = [
                    gapic_types.PubsubMessage(data=PAYLOAD, attributes=ATTRIBUTES)
                    for _ in range(size)
                ]
                response = await client.publish(topic=topic, messages=messages, timeout=60)
                if len(response.message_ids) != size:
                    raise RuntimeError(f"expected {size} message ids")

        sizes = [
            min(ASYNC_BATCH_SIZE, count - start) for start in range(0, count, ASYNC_BATCH_SIZE)
        ]
        try:
            await asyncio.gather(*(send(size) for size in sizes))
        finally:
            await client.transport.close()

    asyncio.run(run())


def process_cpu_seconds(pid: int) -> float:
    """Return user plus system CPU seconds of process `pid`, read from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name, utime and stime are the 12th and 13th fields.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class SubprocessServer:
    """The test server run as `python -m tests.pubsub_server` in a child process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.pubsub_server", "--port", "0", "--log-level", "WARNING"],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the server subprocess exited before printing its ports")
        self.host_port = json.loads(line)["host_port"]

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()


def create_topic(name: str) -> str:
    topic = f"{PROJECT}/topics/{name}"
    client = pubsub_v1.PublisherClient()
    client.create_topic(name=topic)
    client.transport.close()
    return topic


def measure(
    scenario: str,
    server_kind: str,
    run: Callable[[str, int], None],
    count: int,
    server_cpu: Callable[[], float] | None,
) -> Result:
    topic = create_topic(f"{scenario}-{server_kind}")
    run(topic, WARMUP_MESSAGES)
    gc.collect()
    server_start = server_cpu() if server_cpu else None
    wall_start = time.perf_counter()
    cpu_start = time.process_time()
    run(topic, count)
    cpu_seconds = time.process_time() - cpu_start
    wall_seconds = time.perf_counter() - wall_start
    server_seconds = server_cpu() - server_start if server_cpu else None
    return Result(scenario, server_kind, count, wall_seconds, cpu_seconds, server_seconds)


def run_scenarios(
    server_kind: str, scenarios: dict[str, Callable[[str, int], None]], count: int
) -> list[Result]:
    if server_kind == "inprocess":
        server = PubSubTestServer().start()
        host_port, server_cpu, close = server.host_port, None, server.stop
    else:
        child = SubprocessServer()
        host_port, server_cpu, close = child.host_port, child.cpu_seconds, child.close
    os.environ["PUBSUB_EMULATOR_HOST"] = host_port
    try:
        return [
            measure(name, server_kind, run, count, server_cpu) for name, run in scenarios.items()
        ]
    finally:
        close()


def format_table(results: list[Result]) -> str:
    header = (
        f"{'scenario':<10} {'server':<11} {'messages':>8} {'wall s':>7} {'msg/s':>8} "
        f"{'client CPU us/msg':>17} {'server CPU us/msg':>17}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        server_cpu = (
            "in client"
            if r.server_cpu_seconds is None
            else f"{r.server_cpu_seconds / r.messages * 1e6:.1f}"
        )
        lines.append(
            f"{r.scenario:<10} {r.server:<11} {r.messages:>8} {r.wall_seconds:>7.2f} "
            f"{r.messages / r.wall_seconds:>8.0f} "
            f"{r.client_cpu_seconds / r.messages * 1e6:>17.1f} {server_cpu:>17}"
        )
    return "\n".join(lines)


def describe_machine() -> str:
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("google-cloud-pubsub", "grpcio", "protobuf", "proto-plus")
    )
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"Python {platform.python_version()} on {platform.machine()}, {cpus} usable CPUs, "
        f"{platform.processor() or platform.platform()}; {versions}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, default=50_000, help="messages per scenario (default: 50000)"
    )
    parser.add_argument(
        "--servers",
        default="inprocess,subprocess",
        help="comma-separated server placements: inprocess, subprocess (default: both)",
    )
    parser.add_argument(
        "--scenarios",
        default="futures,callbacks,async",
        help="comma-separated scenarios: futures, callbacks, async (default: all)",
    )
    parser.add_argument(
        "--async-in-flight",
        type=int,
        default=4,
        help="concurrent publish calls in the async scenario (default: 4)",
    )
    args = parser.parse_args()

    available = {
        "futures": publish_keeping_futures,
        "callbacks": publish_with_callbacks,
        "async": lambda topic, count: publish_async(topic, count, args.async_in_flight),
    }
    chosen = {name: available[name] for name in args.scenarios.split(",")}
    results = []
    for server_kind in args.servers.split(","):
        if server_kind not in ("inprocess", "subprocess"):
            parser.error(f"invalid server placement {server_kind!r}")
        results.extend(run_scenarios(server_kind, chosen, args.messages))

    print(describe_machine())
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
