"""Rate limits per API key and per client IP, counted in events, on the ``limits`` library.

Storage is ``memory://`` (one process) or Redis (``redis://host:6379/0``), shared by every
instance. The collector calls the asyncio API of ``limits`` directly instead of slowapi's
route decorators: slowapi wraps each Starlette route and calls the synchronous limiter,
which would block the event loop for a Redis round trip on every request.

When Redis fails the limiter fails open by default (``COLLECTOR_RATE_LIMIT_FAIL_OPEN``):
requests are let through, the outage is logged once, the ``collector_rate_limit_storage_up``
gauge drops to 0, and Redis is tried again after a short pause, so limits resume without a
restart. With fail-closed, requests get 503 during the outage instead.

Windows are fixed (one counter per window, one storage round trip per limit). A refused
request still counts against its window, so a client that keeps sending past its limit
stays limited until the window resets.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string

from collector.collect import Refusal

if TYPE_CHECKING:
    from collector.keys import KeyEntry, KeyStore
    from collector.metrics import Metrics
    from collector.settings import Settings

log = logging.getLogger("collector.ratelimit")

# After a storage error, Redis is not asked again for this many seconds.
STORAGE_RETRY_SECONDS = 1.0
# Counters kept in memory before those of past windows are pruned.
LOCAL_PRUNE_AT = 100_000


class RateLimiter:
    """Check and count events against the key's limit and the client IP's limit."""

    def __init__(self, settings: Settings, keys: KeyStore, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.fail_open = settings.rate_limit_fail_open
        self.strategy: FixedWindowRateLimiter | None = None
        self.windows: LocalWindows | None = None
        if settings.rate_limit_storage.startswith("memory://"):
            self.windows = LocalWindows()
        else:
            self.strategy = FixedWindowRateLimiter(_make_storage(settings.rate_limit_storage))
        self.ip_limit = parse(settings.ip_rate_limit)
        self.default_key_limit = parse(settings.key_rate_limit)
        self.key_limits: dict[str, RateLimitItem] = {
            entry.id: parse(entry.rate_limit) if entry.rate_limit else self.default_key_limit
            for entry in keys.entries
        }
        self._storage_down_since: float | None = None
        self._next_attempt = 0.0
        metrics.rate_limit_storage_up.set(1)

    async def start(self) -> None:
        log.info(
            "rate limiter ready",
            extra={
                "storage": self.settings.rate_limit_storage.split("://", 1)[0],
                "ip_limit": str(self.ip_limit),
                "fail_open": self.fail_open,
            },
        )

    async def close(self) -> None:
        return None

    async def check(self, entry: KeyEntry, address: str | None, cost: int) -> list:
        """Count ``cost`` events; raise a 429 Refusal when a limit is exceeded.

        Returns the rate-limit headers to add to a successful response (none, to keep the hot
        path at one storage round trip per limit).
        """
        if self.windows is not None:
            return self.check_local(entry, address, cost)
        if self._storage_down_since is not None and time.monotonic() < self._next_attempt:
            return self._storage_unavailable()
        key_limit = self._key_limit(entry, cost)
        assert self.strategy is not None
        try:
            if not await self.strategy.hit(key_limit, "key", entry.id, cost=cost):
                stats = await self.strategy.get_window_stats(key_limit, "key", entry.id)
                self._refuse(key_limit, stats, "key", cost)
            if address is not None and not await self.strategy.hit(
                self.ip_limit, "ip", address, cost=cost
            ):
                stats = await self.strategy.get_window_stats(self.ip_limit, "ip", address)
                self._refuse(self.ip_limit, stats, "ip", cost)
        except Refusal:
            raise
        except Exception as exc:  # noqa: BLE001 - any storage client error means the same
            return self._storage_failed(exc)
        if self._storage_down_since is not None:
            outage = time.monotonic() - self._storage_down_since
            log.info("rate-limit storage is back", extra={"outage_seconds": round(outage, 1)})
            self._storage_down_since = None
            self.metrics.rate_limit_storage_up.set(1)
        return []

    def check_local(self, entry: KeyEntry, address: str | None, cost: int) -> list:
        """Do what ``check`` does, without awaiting, for the in-process ``memory://`` storage."""
        windows = self.windows
        assert windows is not None
        key_limit = self._key_limit(entry, cost)
        if not windows.hit(key_limit, "key", entry.id, cost):
            self._refuse(key_limit, windows.stats(key_limit, "key", entry.id), "key", cost)
        if address is not None and not windows.hit(self.ip_limit, "ip", address, cost):
            stats = windows.stats(self.ip_limit, "ip", address)
            self._refuse(self.ip_limit, stats, "ip", cost)
        return []

    def _key_limit(self, entry: KeyEntry, cost: int) -> RateLimitItem:
        key_limit = self.key_limits.get(entry.id, self.default_key_limit)
        if cost > key_limit.amount:
            # Waiting would never help: the request alone is over the whole window.
            raise Refusal(
                413,
                f"the request has {cost} events but key {entry.id} may send at most "
                f"{key_limit.amount} per {key_limit.get_expiry()} seconds; send smaller batches",
                "batch_over_rate_limit",
            )
        return key_limit

    def _refuse(
        self, limit: RateLimitItem, stats: tuple[float, int], scope: str, cost: int
    ) -> None:
        reset_at, remaining = stats
        retry_after = max(1, math.ceil(reset_at - time.time()))
        self.metrics.rate_limited.labels(scope).inc()
        window = limit.get_expiry()
        headers = [
            (b"retry-after", str(retry_after).encode()),
            (b"ratelimit-limit", str(limit.amount).encode()),
            (b"ratelimit-remaining", str(max(0, remaining)).encode()),
            (b"ratelimit-reset", str(retry_after).encode()),
            (b"ratelimit-policy", f"{limit.amount};w={window}".encode()),
        ]
        message = (
            f"rate limit exceeded for this {'API key' if scope == 'key' else 'client address'}: "
            f"{limit.amount} events per {window} seconds; this request has {cost}"
        )
        raise Refusal(429, message, f"rate_limited_{scope}", headers)

    def _storage_failed(self, exc: Exception) -> list:
        now = time.monotonic()
        if self._storage_down_since is None:
            self._storage_down_since = now
            self.metrics.rate_limit_storage_up.set(0)
            log.error(
                "rate-limit storage failed; limits are %s until it responds again",
                "off (fail open)" if self.fail_open else "refusing requests (fail closed)",
                extra={"error": type(exc).__name__},
            )
        self._next_attempt = now + STORAGE_RETRY_SECONDS
        return self._storage_unavailable()

    def _storage_unavailable(self) -> list:
        if self.fail_open:
            return []
        raise Refusal(
            503,
            "rate-limit storage is unavailable; retry later",
            "rate_limit_storage_down",
            [(b"retry-after", str(self.settings.retry_after_seconds).encode())],
        )


def _make_storage(url: str) -> Storage:
    return storage_from_string(
        "async+" + url,
        implementation="redispy",
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
    )


class LocalWindows:
    """Fixed-window counters for one process, for ``memory://`` storage.

    The ``limits`` library's MemoryStorage locks each key and starts a timer thread every
    10 ms to expire counters, which cost about 10 µs per hit when measured here. The event loop is
    single-threaded, so a dict of (window number, count) pairs does the same counting.
    Windows are aligned to multiples of their length since the epoch.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], tuple[int, int]] = {}

    def hit(self, limit: RateLimitItem, scope: str, identifier: str, cost: int) -> bool:
        """Add ``cost`` to the current window; True while the total is within the limit."""
        length = limit.get_expiry()
        window = int(time.time() // length)
        key = (scope, identifier, length)
        current = self.counts.get(key)
        count = current[1] + cost if current is not None and current[0] == window else cost
        self.counts[key] = (window, count)
        if len(self.counts) > LOCAL_PRUNE_AT:
            self._prune()
        return count <= limit.amount

    def stats(self, limit: RateLimitItem, scope: str, identifier: str) -> tuple[float, int]:
        """Return (reset time as epoch seconds, events remaining) of the current window."""
        length = limit.get_expiry()
        window = int(time.time() // length)
        current = self.counts.get((scope, identifier, length))
        used = current[1] if current is not None and current[0] == window else 0
        return (window + 1) * length, limit.amount - used

    def _prune(self) -> None:
        now = time.time()
        self.counts = {
            key: value for key, value in self.counts.items() if value[0] == int(now // key[2])
        }
