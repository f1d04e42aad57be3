"""Application factory: the collect handler in front of a FastAPI app for everything else."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from collector.collect import COLLECT_PATHS, CollectHandler
from collector.keys import DEV_KEYS_FILE, KeyStore
from collector.metrics import Metrics
from collector.settings import Settings
from collector.sinks.base import Sink

log = logging.getLogger("collector.app")

SDK_PATH = Path(__file__).resolve().parent / "static" / "tracker.js"


class JavaScriptResponse(Response):
    media_type = "text/javascript"


def make_sink(settings: Settings) -> Sink:
    """Build the sink that ``COLLECTOR_SINK`` names."""
    if settings.sink == "pubsub":
        from collector.sinks.pubsub import PubSubSink

        return PubSubSink(settings)
    from collector.sinks.local import LocalFileSink

    return LocalFileSink(
        settings.data_dir,
        rotate_seconds=settings.local_rotate_seconds,
        rotate_bytes=settings.local_rotate_bytes,
        fsync=settings.local_fsync,
    )


def load_keys(settings: Settings) -> KeyStore:
    """Load the keys file, or the development keys in the data folder when none is set."""
    if settings.keys_file is not None:
        # A configured keys file must exist: starting without keys would refuse every request.
        return KeyStore.load(settings.keys_file)
    path = settings.data_dir / DEV_KEYS_FILE
    if not path.exists():
        return KeyStore([])
    return KeyStore.load(path)


class CollectorApp:
    """The ASGI application: collect paths go to the fast handler, the rest to FastAPI."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyStore | None = None,
        sink: Sink | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys if keys is not None else load_keys(settings)
        self.sink = sink if sink is not None else make_sink(settings)
        self.metrics = Metrics()
        self.limiter = _make_limiter(settings, self.keys, self.metrics)
        self.handler = CollectHandler(settings, self.keys, self.sink, self.metrics, self.limiter)
        self.api = _build_api(self)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
        elif scope["path"] in COLLECT_PATHS:
            await self.handler(scope, receive, send)
        else:
            await self.api(scope, receive, _with_security_headers(send, scope["path"]))


# Added to every response FastAPI sends, unless the route set the header itself.
_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
_NO_STORE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# The API viewer must not be framed by another site (clickjacking).
_DOCS_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
]


def _with_security_headers(send: Any, path: str) -> Any:
    extra = list(_SECURITY_HEADERS)
    if path in _NO_STORE_PATHS:
        extra.append((b"cache-control", b"no-store"))
    if path == "/docs":
        extra.extend(_DOCS_HEADERS)

    async def send_with_headers(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            headers.extend(item for item in extra if item[0] not in present)
            message = {**message, "headers": headers}
        await send(message)

    return send_with_headers


def _make_limiter(settings: Settings, keys: KeyStore, metrics: Metrics) -> Any:
    from collector.ratelimit import RateLimiter

    return RateLimiter(settings, keys, metrics)


def _build_api(app: CollectorApp) -> FastAPI:
    settings = app.settings

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await app.sink.start()
        app.handler.deadlines.start()
        if settings.gc_tuning:
            # Full collections paused the loop for 20-60 ms under load (bench/run.py, py-spy):
            # objects alive after start-up are moved out of the collector's view, and the
            # first generation runs less often. Reference counting frees almost all garbage.
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
        if app.limiter is not None:
            await app.limiter.start()
        log.info(
            "collector started",
            extra={**app.sink.describe(), "keys": len(app.keys.entries)},
        )
        try:
            yield
        finally:
            log.info("collector stopping; flushing the sink")
            await app.sink.close()
            await app.handler.deadlines.close()
            if app.limiter is not None:
                await app.limiter.close()
            log.info("collector stopped")

    api = FastAPI(
        title="Book media event collector",
        version="1",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )

    @api.get("/healthz", summary="Process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get(
        "/readyz",
        summary="Sink is ready to confirm events",
        responses={503: {"description": "The sink is not ready; retry after Retry-After"}},
    )
    async def readyz() -> Response:
        ready = app.sink.ready
        app.metrics.sink_ready.set(1 if ready else 0)
        if ready:
            return JSONResponse({"status": "ready", "sink": app.sink.name})
        return JSONResponse(
            {"status": "not ready", "sink": app.sink.name},
            status_code=503,
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )

    @api.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        app.metrics.sink_ready.set(1 if app.sink.ready else 0)
        app.metrics.asyncio_tasks.set(len(asyncio.all_tasks()))
        return Response(generate_latest(app.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.get(
        "/sdk.js",
        summary="The browser tracker",
        response_class=JavaScriptResponse,
        responses={404: {"description": "The tracker is not installed"}},
    )
    async def sdk() -> Response:
        try:
            source = SDK_PATH.read_bytes()
        except OSError:
            return JSONResponse({"error": "the tracker is not installed"}, status_code=404)
        return Response(
            source,
            media_type="text/javascript; charset=utf-8",
            headers={
                "Cache-Control": "public, max-age=3600",
                "Access-Control-Allow-Origin": "*",
                "X-Content-Type-Options": "nosniff",
            },
        )

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version, routes=api.routes)
            schema["paths"].update(_collect_openapi())
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api


def _collect_openapi() -> dict[str, Any]:
    """Describe the collect endpoints, which the fast handler serves outside FastAPI's router."""
    field_error = {
        "type": "object",
        "required": ["field", "message"],
        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
    }
    rejection = {
        "type": "object",
        "required": ["index", "event_id", "errors"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "event_id": {"type": ["string", "null"]},
            "errors": {"type": "array", "minItems": 1, "items": field_error},
        },
    }
    report = {
        "type": "object",
        "required": ["accepted", "rejected"],
        "properties": {
            "accepted": {"type": "integer", "minimum": 0},
            "rejected": {"type": "array", "items": rejection},
        },
    }
    error = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}

    retry_after = {
        "Retry-After": {
            "description": "Seconds to wait before sending again",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    }

    def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object"},
                        {"type": "array", "items": {"type": "object"}},
                    ]
                }
            },
            "text/plain": {"schema": {"type": "string"}},
        },
    }
    responses = {
        "200": json_response("At least one event accepted", report),
        "400": json_response("Body is not JSON or not an event, array or batch", error),
        "401": json_response("API key missing or unknown", error),
        "403": json_response("Origin or event kind not allowed for this key", error),
        "413": json_response("Body, event or event count over its limit", error),
        "415": json_response("Unsupported Content-Type or Content-Encoding", error),
        "422": json_response("Every event failed validation", report),
        "429": {**json_response("Rate limited", error), "headers": retry_after},
        "503": {**json_response("Sink unavailable or overloaded", error), "headers": retry_after},
    }
    key_parameters = [
        {"name": "key", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "X-API-Key", "in": "header", "required": False, "schema": {"type": "string"}},
    ]
    collect = {
        "post": {
            "summary": "Collect events",
            "operationId": "collect",
            "parameters": key_parameters,
            "requestBody": body,
            "responses": responses,
        },
        "options": {
            "summary": "CORS preflight",
            "operationId": "collect_preflight",
            "responses": {"204": {"description": "Preflight answered"}},
        },
    }
    debug = {
        "post": {
            "summary": "Check events without publishing them",
            "operationId": "debug_collect",
            "parameters": key_parameters,
            "requestBody": body,
            "responses": {
                key: value for key, value in responses.items() if key not in ("422", "503", "429")
            },
        }
    }
    return {"/collect": collect, "/debug/collect": debug}


def create_app(
    settings: Settings | None = None, keys: KeyStore | None = None, sink: Sink | None = None
) -> CollectorApp:
    """Build the collector application from settings (read from the environment by default)."""
    from collector.settings import load_settings

    return CollectorApp(settings or load_settings(), keys=keys, sink=sink)
