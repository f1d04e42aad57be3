"""Pytest fixture factory for the in-process Pub/Sub test server.

Usage in a test module or conftest.py:

    from tests.pubsub_server.fixtures import pubsub_server_fixture

    pubsub_server = pubsub_server_fixture()

    def test_publish(pubsub_server, monkeypatch):
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_server.host_port)
        ...

The fixture changes no environment variable and no global state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.pubsub_server.server import PubSubTestServer


def pubsub_server_fixture(
    *,
    name: str = "pubsub_server",
    scope: str = "function",
    control: bool = False,
    host: str = "127.0.0.1",
    max_workers: int = 32,
    stop_grace: float = 0.5,
) -> Callable[..., Any]:
    """Create a fixture that yields a started `PubSubTestServer` on a free port.

    The server runs on background threads of the test process and stops when
    the fixture's scope ends. `control=True` also starts the HTTP control
    endpoint, whose port is `server.control_port`. A fixture with a scope
    wider than "function" shares topics, history and fault settings between
    tests, so call `server.reset()` where that matters.
    """

    @pytest.fixture(name=name, scope=scope)
    def _pubsub_server() -> Iterator[PubSubTestServer]:
        server = PubSubTestServer(
            host, 0, control_port=0 if control else None, max_workers=max_workers
        )
        server.start()
        try:
            yield server
        finally:
            server.stop(grace=stop_grace)

    return _pubsub_server
