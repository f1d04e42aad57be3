"""Request deadlines enforced by one periodic task instead of a timer per request.

``asyncio.timeout`` schedules and cancels a timer handle on every use, which costs more than
the rest of the body read for a small request. Here each request registers its deadline in a
dict; a watchdog task wakes every ``resolution`` seconds and cancels the tasks whose deadline
passed. Deadlines are therefore enforced within ``resolution`` seconds of their due time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager


class DeadlineExceeded(Exception):
    """The request's current phase ran past its deadline."""


class Deadlines:
    """Cancel tasks whose registered deadline passed; see the module docstring."""

    def __init__(self, resolution: float = 0.1) -> None:
        self.resolution = resolution
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(
                self._watch(), name="request-deadlines"
            )

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            try:
                await self._watchdog
            except asyncio.CancelledError:
                pass
            self._watchdog = None

    @contextmanager
    def limit(self, seconds: float) -> Iterator[None]:
        """Raise DeadlineExceeded if the body of the ``with`` block runs past ``seconds``."""
        task = asyncio.current_task()
        if task is None or self._watchdog is None:
            yield
            return
        self._due[task] = time.monotonic() + seconds
        try:
            yield
        except asyncio.CancelledError:
            if task in self._expired:
                self._expired.discard(task)
                task.uncancel()
                raise DeadlineExceeded from None
            raise
        finally:
            self._due.pop(task, None)
            self._expired.discard(task)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.resolution)
            if not self._due:
                continue
            now = time.monotonic()
            for task, due in list(self._due.items()):
                if due <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()
