"""Request deadlines enforced by one periodic task instead of a timer per request.

``asyncio.timeout`` schedules and cancels a timer handle on every use, which costs more than
the rest of the body read for a small request. Here each request registers its deadline in a
dict; a watchdog task wakes every ``resolution`` seconds and cancels the tasks whose deadline
passed. Deadlines are therefore enforced within ``resolution`` seconds of their due time.
"""

from __future__ import annotations

import asyncio
import time


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

    def limit(self, seconds: float) -> _Limit:
        """Raise DeadlineExceeded if the body of the ``with`` block runs past ``seconds``."""
        return _Limit(self, seconds)

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


class _Limit:
    """The context manager of ``Deadlines.limit``, a class because it runs twice per request
    and a generator-based context manager adds a generator object and more calls."""

    __slots__ = ("deadlines", "seconds", "task")

    def __init__(self, deadlines: Deadlines, seconds: float) -> None:
        self.deadlines = deadlines
        self.seconds = seconds
        self.task: asyncio.Task[object] | None = None

    def __enter__(self) -> None:
        deadlines = self.deadlines
        task = asyncio.current_task()
        if task is None or deadlines._watchdog is None:
            return
        self.task = task
        deadlines._due[task] = time.monotonic() + self.seconds

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: object
    ) -> None:
        task = self.task
        if task is None:
            return
        deadlines = self.deadlines
        deadlines._due.pop(task, None)
        if task in deadlines._expired:
            deadlines._expired.discard(task)
            if kind is asyncio.CancelledError:
                task.uncancel()
                raise DeadlineExceeded from None
