"""Prometheus metrics. Label values are bounded sets: statuses, reasons, event names, key ids.

The counts that change on every request (requests, accepted events, body bytes, latency and
events in flight) are plain integers in ``HotCounts``, which the registry reads at each
scrape. A prometheus_client Counter takes a lock and several Python calls per update, which
a profile put at an estimated 5 to 7 us per request for these five metrics. Only the event
loop thread updates them, so they need no lock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class HotCounts(Collector):
    """Per-request counts of the collect endpoints, exported in Prometheus form on scrape."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.accepted: dict[str, int] = {}
        self.body_bytes = 0
        self.inflight_events = 0
        # One count per bucket of LATENCY_BUCKETS, plus one for +Inf.
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe_latency(self, seconds: float) -> None:
        self.latency_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily(
            "collector_requests",
            "HTTP requests to the collect endpoints by path and status code.",
            labels=["path", "status"],
        )
        for (path, status), count in sorted(self.requests.items()):
            requests.add_metric([path, status], count)
        yield requests

        accepted = CounterMetricFamily(
            "collector_events_accepted",
            "Events confirmed by the sink, by event name.",
            labels=["event_name"],
        )
        for name, count in sorted(self.accepted.items()):
            accepted.add_metric([name], count)
        yield accepted

        yield CounterMetricFamily(
            "collector_body_bytes",
            "Request body bytes read, before decompression.",
            value=self.body_bytes,
        )
        yield GaugeMetricFamily(
            "collector_inflight_events",
            "Events waiting for sink confirmation.",
            value=self.inflight_events,
        )

        cumulative = 0
        buckets = []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.latency_counts, strict=True):
            cumulative += count
            buckets.append((_bound_text(bound), cumulative))
        yield HistogramMetricFamily(
            "collector_request_duration_seconds",
            "Time from request start to response for the collect endpoint.",
            buckets=buckets,
            sum_value=self.latency_sum,
        )


def _bound_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class Metrics:
    """The collector's metrics, in their own registry so several apps can run in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_resident_memory_bytes, process_open_fds and CPU seconds of this process.
        ProcessCollector(registry=self.registry)
        self.hot = HotCounts()
        self.registry.register(self.hot)
        self.events_rejected = Counter(
            "collector_events_rejected_total",
            "Events rejected, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "collector_rate_limited_total",
            "Requests answered 429, by limit scope (key or ip).",
            ["scope"],
            registry=self.registry,
        )
        self.sink_errors = Counter(
            "collector_sink_errors_total",
            "Publish calls that failed or missed their deadline, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.sink_ready = Gauge(
            "collector_sink_ready",
            "1 while the sink confirms writes, else 0.",
            registry=self.registry,
        )
        self.asyncio_tasks = Gauge(
            "collector_asyncio_tasks",
            "asyncio tasks alive in the event loop, read at each scrape.",
            registry=self.registry,
        )
        self.rate_limit_storage_up = Gauge(
            "collector_rate_limit_storage_up",
            "1 while the rate-limit storage answers, else 0 (limits fail open or closed).",
            registry=self.registry,
        )
