"""Prometheus metrics. Label values are bounded sets: statuses, reasons, event names, key ids."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector


class Metrics:
    """The collector's metrics, in their own registry so several apps can run in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_resident_memory_bytes, process_open_fds and CPU seconds of this process.
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "collector_requests_total",
            "HTTP requests to the collect endpoints by path and status code.",
            ["path", "status"],
            registry=self.registry,
        )
        self.events_accepted = Counter(
            "collector_events_accepted_total",
            "Events confirmed by the sink, by event name.",
            ["event_name"],
            registry=self.registry,
        )
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
        self.body_bytes = Counter(
            "collector_body_bytes_total",
            "Request body bytes read, before decompression.",
            registry=self.registry,
        )
        self.latency = Histogram(
            "collector_request_duration_seconds",
            "Time from request start to response for the collect endpoint.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.sink_errors = Counter(
            "collector_sink_errors_total",
            "Publish calls that failed or missed their deadline, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.inflight_events = Gauge(
            "collector_inflight_events",
            "Events waiting for sink confirmation.",
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
