"""Run the Pub/Sub test server of tests/pubsub_server for a benchmark, with bounded memory.

The test server keeps every published message for inspection, which at benchmark rates grows
by about 1 GB per million messages. This runner creates one topic, then every second counts
and drops the topic's stored messages. Run from the repository root:

    python -m bench.apps.pubsub_server --topic projects/bench-project/topics/events

It prints one JSON line with ``host_port`` and ``topic`` when it is serving. On SIGTERM or
SIGINT it stops and prints one JSON line with ``published``, the number of messages stored
over its lifetime.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from tests.pubsub_server import PubSubTestServer

TRIM_INTERVAL_SECONDS = 1.0


def drop_published(server: PubSubTestServer, topic: str) -> int:
    """Delete the stored messages of ``topic`` and return how many there were."""
    # NOTE: the test server has no public call that drops history but keeps the topic
    # (reset() deletes topics too), so this takes its store's lock and clears the list.
    store = server._store
    with store.condition:
        history = store.published.get(topic)
        if not history:
            return 0
        store.published[topic] = []
    # The list is freed here, outside the lock, so Publish calls do not wait while tens of
    # thousands of stored messages are deallocated.
    return len(history)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=0, help="gRPC port; 0 picks a free port")
    parser.add_argument("--topic", required=True, help="topic to create, projects/P/topics/T")
    parser.add_argument(
        "--max-workers", type=int, default=32, help="gRPC server threads (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    stop_requested = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    server = PubSubTestServer(args.host, args.port, max_workers=args.max_workers).start()
    published = 0
    try:
        server.create_topic(args.topic)
        print(json.dumps({"host_port": server.host_port, "topic": args.topic}), flush=True)
        while not stop_requested.wait(TRIM_INTERVAL_SECONDS):
            published += drop_published(server, args.topic)
    finally:
        server.stop()
        published += drop_published(server, args.topic)
    print(json.dumps({"published": published}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
