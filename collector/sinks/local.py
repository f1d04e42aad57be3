"""Local sink: newline-delimited JSON files, flushed and fsynced before a request gets its response.

Concurrent requests share one write and one fsync (group commit): a single writer task takes
everything queued since its last write, appends it, fsyncs, then confirms every waiting
request. Files rotate by age and size under ``<data_dir>/events``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from collector.sinks.base import Message, Sink, SinkUnavailable

log = logging.getLogger("collector.sinks.local")

EVENTS_FOLDER = "events"
# Seconds after a failed write before the sink reports ready and tries writing again.
RETRY_SECONDS = 1.0


class LocalFileSink(Sink):
    """Append rows to rotating NDJSON files under ``data_dir/events``."""

    name = "local"

    def __init__(
        self,
        data_dir: Path,
        rotate_seconds: float = 3600.0,
        rotate_bytes: int = 64 * 1024 * 1024,
        fsync: bool = True,
    ) -> None:
        self.folder = Path(data_dir) / EVENTS_FOLDER
        self.rotate_seconds = rotate_seconds
        self.rotate_bytes = rotate_bytes
        self.fsync = fsync
        # One request's rows, each followed by a newline, and the future that confirms them.
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._size = 0
        self._sequence = 0
        self._ready = False
        self._failed_at = time.monotonic()
        self._closing = False

    @property
    def ready(self) -> bool:
        """True while writes succeed, and again RETRY_SECONDS after a failed write.

        Reporting ready again lets the next request try a write, so a disk that has space
        again, or a new file after rotation, brings the sink back without a restart.
        """
        if self._closing:
            return False
        return self._ready or time.monotonic() - self._failed_at >= RETRY_SECONDS

    @property
    def current_path(self) -> Path | None:
        return self._path

    def describe(self) -> dict[str, object]:
        return {
            "sink": self.name,
            "folder": str(self.folder),
            "rotate_seconds": self.rotate_seconds,
            "rotate_bytes": self.rotate_bytes,
            "fsync": self.fsync,
        }

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._open_new_file()
            self._ready = True
        except OSError as exc:
            log.error(
                "local sink cannot open a file",
                extra={"folder": str(self.folder), "error": str(exc)},
            )
        self._writer = asyncio.create_task(self._write_loop(), name="local-sink-writer")

    async def publish(self, messages: list[Message]) -> None:
        if self._closing:
            raise SinkUnavailable("the sink is shutting down")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lines = [message.data for message in messages]
        lines.append(b"")
        self._pending.append((b"\n".join(lines), future))
        # The rows are copied into the joined lines; the caller's list need not keep them.
        del lines
        messages.clear()
        self._wakeup.set()
        await future

    async def close(self) -> None:
        self._closing = True
        self._wakeup.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            batch, self._pending = self._pending, []
            payload = b"".join([lines for lines, _ in batch])
            try:
                await loop.run_in_executor(None, self._write_sync, payload)
            except OSError as exc:
                self._ready = False
                self._failed_at = time.monotonic()
                log.error(
                    "local sink write failed; requests get 503",
                    extra={"path": str(self._path), "bytes": len(payload), "error": str(exc)},
                )
                error = SinkUnavailable(f"writing events failed: {exc.strerror or exc}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                if not self._ready:
                    log.info("local sink writes again", extra={"path": str(self._path)})
                self._ready = True
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    def _write_sync(self, payload: bytes) -> None:
        """Append ``payload`` and fsync; on failure cut the file back so no partial line stays."""
        if self._fd is None or self._should_rotate(len(payload)):
            self._rotate()
        assert self._fd is not None
        start = self._size
        try:
            view = memoryview(payload)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            self._truncate_to(start)
            raise
        self._size = start + len(payload)

    def _truncate_to(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)  # type: ignore[arg-type]
        except OSError as exc:
            # The file may now end in a partial line; start a new file for the next write.
            log.error(
                "local sink cannot truncate a failed write; rotating",
                extra={"path": str(self._path), "error": str(exc)},
            )
            self._close_file()

    def _should_rotate(self, incoming: int) -> bool:
        if self._size == 0:
            return False
        too_old = time.monotonic() - self._opened_at >= self.rotate_seconds
        return too_old or self._size + incoming > self.rotate_bytes

    def _rotate(self) -> None:
        self._close_file()
        self._open_new_file()

    def _close_file(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as exc:
                log.error("local sink close failed", extra={"error": str(exc)})

    def _open_new_file(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = self.folder / f"events-{stamp}-{os.getpid()}-{self._sequence:04d}.ndjson"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._path = path
        self._opened_at = time.monotonic()
        self._size = os.fstat(self._fd).st_size
        if self.fsync:
            # The new directory entry must survive a crash too.
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
