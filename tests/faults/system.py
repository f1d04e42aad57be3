"""Services and file systems that the fault tests start, break and repair, and process stats.

Everything here listens on 127.0.0.1 or lives under a folder the caller owns. Mounting a tmpfs
needs root, which the development machines and CI have.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
from google.pubsub_v1.services.publisher import PublisherClient
from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, CollectorProcess
from tests.pubsub_server.control import ControlClient

FILL_CHUNK_BYTES = 64 * 1024


class MountError(AssertionError):
    """A mount command failed; the message has the command and its output."""


def _run_mount(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(arguments, capture_output=True, text=True, timeout=10, check=False)


class Tmpfs:
    """A tmpfs of ``size`` mounted on ``folder``, which can be filled, freed and remounted.

    ``mount()`` raises MountError, so a test that needs the mount fails instead of skipping.
    """

    def __init__(self, folder: Path, size: str = "16m") -> None:
        self.folder = folder
        self.size = size
        self.filler = folder / "filler.bin"
        self.mounted = False

    def mount(self) -> Tmpfs:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = ["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.folder)]
        result = _run_mount(command)
        if result.returncode != 0:
            raise MountError(
                f"{' '.join(command)} failed with exit status {result.returncode}: "
                f"{result.stderr.strip()}; the disk-full and read-only cases need root "
                "and a kernel that allows tmpfs mounts"
            )
        self.mounted = True
        return self

    def remount(self, mode: str) -> subprocess.CompletedProcess[str]:
        """Remount with ``mode`` ("ro" or "rw") and return the finished mount command."""
        return _run_mount(["mount", "-o", f"remount,{mode}", str(self.folder)])

    def remount_or_fail(self, mode: str) -> None:
        result = self.remount(mode)
        if result.returncode != 0:
            raise MountError(
                f"mount -o remount,{mode} {self.folder} failed with exit status "
                f"{result.returncode}: {result.stderr.strip()}"
            )

    def fill(self) -> int:
        """Append zeros to the filler file until the tmpfs is full, and return the bytes added.

        Call it again to take space that the collector freed by truncating a failed write.
        """
        added = 0
        chunk = b"\0" * FILL_CHUNK_BYTES
        descriptor = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = len(chunk)
            while size > 0:
                try:
                    added += os.write(descriptor, chunk[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    # A smaller write may still fit in the last free pages.
                    size //= 2
        finally:
            os.close(descriptor)
        return added

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        """Unmount, lazily if a process still has a file open there."""
        if not self.mounted:
            return
        self.remount("rw")
        result = _run_mount(["umount", str(self.folder)])
        if result.returncode != 0:
            result = _run_mount(["umount", "-l", str(self.folder)])
        if result.returncode != 0:
            raise MountError(f"umount {self.folder} failed: {result.stderr.strip()}")
        self.mounted = False


class CollectorOnPort(CollectorProcess):
    """A collector process bound to a given port, to restart one where clients expect it."""

    def __init__(self, data_dir: Path, env: dict[str, str], port: int) -> None:
        super().__init__(data_dir, env)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env["COLLECTOR_PORT"] = str(port)
        self.log_path = data_dir.parent / f"collector-{port}.log"


class PubSubProcess:
    """The Pub/Sub test server in its own process (``python -m tests.pubsub_server``).

    A separate process keeps the server's gRPC threads off the load generator's interpreter.
    ``control`` changes faults and reads what was published.
    """

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.host_port = ""
        self.control: ControlClient | None = None

    def start(self, timeout: float = 15.0) -> PubSubProcess:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.pubsub_server",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--control-port",
                "0",
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            self.stop()
            raise RuntimeError(f"the Pub/Sub test server printed no address in {timeout} s")
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"the Pub/Sub test server exited; see {self.log_path}")
        ports = json.loads(line)
        self.host_port = ports["host_port"]
        self.control = ControlClient(f"127.0.0.1:{ports['control_port']}", timeout=120)
        return self

    def create_topic(self, topic: str) -> None:
        channel = grpc.insecure_channel(self.host_port, options=[("grpc.enable_http_proxy", 0)])
        try:
            client = PublisherClient(transport=PublisherGrpcTransport(channel=channel))
            client.create_topic(name=topic, timeout=5)
        finally:
            channel.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        if hasattr(self, "_log"):
            self._log.close()


def rss_bytes(pid: int) -> int:
    """Return the resident set size of process ``pid`` from /proc (Linux only)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status")


def open_fds(pid: int) -> int:
    """Return how many file descriptors process ``pid`` has open, from /proc (Linux only)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def scrape(url: str) -> dict[str, float]:
    """Return every sample of ``url``/metrics, keyed by name and sorted labels."""
    text = httpx.get(url + "/metrics", timeout=5, trust_env=False).text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def wait_for_status(url: str, expected: int, timeout: float) -> float:
    """Poll GET ``url`` until it returns ``expected``, and return the seconds it took.

    Raises AssertionError with the last status seen when ``timeout`` passes first.
    """
    started = time.monotonic()
    last: int | str = "none"
    while time.monotonic() - started < timeout:
        try:
            last = httpx.get(url, timeout=2, trust_env=False).status_code
        except httpx.TransportError as exc:
            last = type(exc).__name__
        if last == expected:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"GET {url} did not return {expected} within {timeout} s (last: {last})")


def request_head(port: int, path: str, content_length: int, key: str) -> bytes:
    """Return the request line and headers of a JSON POST to 127.0.0.1:``port``."""
    return (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"X-API-Key: {key}\r\n"
        f"Content-Length: {content_length}\r\n"
        "\r\n"
    ).encode()


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_response(sock: socket.socket, limit: int = 65536) -> bytes:
    """Read until the peer closes or the whole response (headers and body) has arrived."""
    data = b""
    while len(data) < limit:
        try:
            chunk = sock.recv(4096)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
        head, separator, body = data.partition(b"\r\n\r\n")
        if separator:
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and len(body) >= int(value):
                    return data
    return data


def status_of(response: bytes) -> int:
    """Return the status code of a raw HTTP/1.1 response, or 0 when there is none."""
    parts = response.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return 0
    return int(parts[1])
