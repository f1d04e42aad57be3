"""Run the Pub/Sub test server until SIGTERM or SIGINT.

Run from the repository root:

    python -m tests.pubsub_server --host 127.0.0.1 --port 0 --control-port 0

Prints one JSON line on stdout with the bound addresses, for example
{"host": "127.0.0.1", "port": 40123, "host_port": "127.0.0.1:40123",
"control_port": 40124}. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from tests.pubsub_server.server import PubSubTestServer

logger = logging.getLogger("tests.pubsub_server")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.pubsub_server",
        description="In-memory Pub/Sub gRPC server for tests, with fault injection.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind the gRPC port and the control port to (default: %(default)s)",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="gRPC port; 0 picks a free port (default: 0)"
    )
    parser.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="HTTP control port; 0 picks a free port (default: no control endpoint)",
    )
    parser.add_argument(
        "--max-workers",
        type=int,
        default=32,
        help="gRPC worker threads, the limit on concurrent calls (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the stderr log (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    server = PubSubTestServer(
        args.host, args.port, control_port=args.control_port, max_workers=args.max_workers
    )
    server.start()
    try:
        ports = {
            "host": server.host,
            "port": server.port,
            "host_port": server.host_port,
            "control_port": server.control_port,
        }
        print(json.dumps(ports), flush=True)
        # A timed wait lets the main thread run the signal handlers promptly.
        while not stop_requested.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
