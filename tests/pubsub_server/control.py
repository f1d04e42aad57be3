"""HTTP control endpoint of the Pub/Sub test server, and a client for it.

The endpoint lets another process change the fault mode and read what was
published. It has no authentication, so bind it to a loopback address only.
Bodies are JSON.

- ``GET /fault`` returns the current settings, for example
  ``{"mode": "ok", "delay_seconds": 0.0, "failure_fraction": 0.0, "seed": 0,
  "methods": ["GetTopic", "Publish", "TestIamPermissions"]}``.
- ``POST /fault`` with ``{"mode": "slow", "delay_seconds": 2}`` installs new
  settings and returns them. The optional keys are ``delay_seconds``,
  ``failure_fraction``, ``seed`` and ``methods`` (a list of RPC names). An
  invalid body returns 400 with ``{"error": "..."}``.
- ``GET /published?topic=projects/p/topics/t`` returns ``{"topic": ...,
  "messages": [{"message_id": ..., "data_base64": ..., "attributes": {...}}]}``.
- ``POST /reset`` deletes all topics, subscriptions and history, clears the
  fault and returns the new fault settings.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING

from tests.pubsub_server.server import PublishedMessage

if TYPE_CHECKING:
    from tests.pubsub_server.server import PubSubTestServer

logger = logging.getLogger(__name__)

_FAULT_KEYS = {"mode", "delay_seconds", "failure_fraction", "seed", "methods"}
_MAX_BODY_BYTES = 64 * 1024


class _ThreadingHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _ThreadingHTTPServerV6(_ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "PubSubTestServerControl/1"
    pubsub_server: PubSubTestServer  # set on a per-server subclass

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/fault":
            self._send_json(200, self.pubsub_server.fault.to_dict())
        elif url.path == "/published":
            topics = urllib.parse.parse_qs(url.query).get("topic")
            if not topics:
                self._send_json(400, {"error": "missing query parameter 'topic'"})
                return
            messages = [
                {
                    "message_id": message.message_id,
                    "data_base64": base64.b64encode(message.data).decode("ascii"),
                    "attributes": message.attributes,
                }
                for message in self.pubsub_server.published(topics[0])
            ]
            self._send_json(200, {"topic": topics[0], "messages": messages})
        else:
            self._send_json(404, {"error": f"unknown path {url.path!r}"})

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/fault":
            self._post_fault()
        elif path == "/reset":
            self.pubsub_server.reset()
            self._send_json(200, self.pubsub_server.fault.to_dict())
        else:
            self._send_json(404, {"error": f"unknown path {path!r}"})

    def _post_fault(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY_BYTES:
            self._send_json(400, {"error": f"body of {length} bytes is too large"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as exc:
            self._send_json(400, {"error": f"invalid JSON body: {exc}"})
            return
        if not isinstance(body, dict) or "mode" not in body:
            self._send_json(400, {"error": 'expected a JSON object with a "mode" key'})
            return
        unknown = set(body) - _FAULT_KEYS
        if unknown:
            self._send_json(400, {"error": f"unknown keys {sorted(unknown)}"})
            return
        mode = body.pop("mode")
        try:
            settings = self.pubsub_server.set_fault(mode, **body)
        except (TypeError, ValueError) as exc:
            self._send_json(400, {"error": str(exc)})
            return
        self._send_json(200, settings.to_dict())

    def _send_json(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("control %s - %s", self.address_string(), format % args)


class ControlServer:
    """HTTP control endpoint bound to `host`:`port` (0 picks a free port)."""

    def __init__(self, pubsub_server: PubSubTestServer, host: str, port: int) -> None:
        handler = type("BoundHandler", (_Handler,), {"pubsub_server": pubsub_server})
        server_class = _ThreadingHTTPServerV6 if ":" in host else _ThreadingHTTPServer
        self._httpd = server_class((host, port), handler)
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="pubsub-test-server-control",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=2.0)


class ControlClient:
    """Client of the HTTP control endpoint, for tests in another process."""

    def __init__(self, host_port: str, timeout: float = 5.0) -> None:
        self._base_url = f"http://{host_port}"
        self._timeout = timeout
        # An empty ProxyHandler ignores http_proxy settings, so requests
        # always go straight to the control endpoint.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def fault(self) -> dict[str, object]:
        return self._request("GET", "/fault")

    def set_fault(self, mode: str, **params: object) -> dict[str, object]:
        """Install a fault mode. `params` are the optional keys of POST /fault."""
        return self._request("POST", "/fault", {"mode": mode, **params})

    def reset(self) -> dict[str, object]:
        return self._request("POST", "/reset", {})

    def published(self, topic: str) -> list[PublishedMessage]:
        query = urllib.parse.urlencode({"topic": topic})
        payload = self._request("GET", f"/published?{query}")
        return [
            PublishedMessage(
                item["message_id"], base64.b64decode(item["data_base64"]), item["attributes"]
            )
            for item in payload["messages"]
        ]

    def _request(self, method: str, path: str, body: object | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            self._base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise RuntimeError(
                f"{method} {self._base_url}{path} failed with HTTP {exc.code}: {detail}"
            ) from None
