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
from limits.storage import MemoryStorage as SyncMemoryStorage
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter as SyncFixedWindow

from collector.collect import Refusal

if TYPE_CHECKING:
    from collector.keys import KeyEntry, KeyStore
    from collector.metrics import Metrics
    from collector.settings import Settings

log = logging.getLogger("collector.ratelimit")

# After a storage error, Redis is not asked again for this many seconds.
STORAGE_RETRY_SECONDS = 1.0


class RateLimiter:
    """Check and count events against the key's limit and the client IP's limit."""

    def __init__(self, settings: Settings, keys: KeyStore, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.fail_open = settings.rate_limit_fail_open
        # In memory, the synchronous strategy avoids an await and a lock per request.
        self.local: SyncFixedWindow | None = None
        self.strategy: FixedWindowRateLimiter | None = None
        if settings.rate_limit_storage.startswith("memory://"):
            self.local = SyncFixedWindow(SyncMemoryStorage())
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
        if self._storage_down_since is not None and time.monotonic() < self._next_attempt:
            return self._storage_unavailable()
        key_limit = self.key_limits.get(entry.id, self.default_key_limit)
        local = self.local
        if local is not None:
            if not local.hit(key_limit, "key", entry.id, cost=cost):
                self._refuse(
                    key_limit, local.get_window_stats(key_limit, "key", entry.id), "key", cost
                )
            if address is not None and not local.hit(self.ip_limit, "ip", address, cost=cost):
                stats = local.get_window_stats(self.ip_limit, "ip", address)
                self._refuse(self.ip_limit, stats, "ip", cost)
            return []
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
                "rate-limit storage failed; limits are %s until it answers again",
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
