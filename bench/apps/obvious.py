"""The obvious collector a team would write first, as the baseline for bench/run.py.

A FastAPI route ``POST /collect`` validates the body against the collector's own event models
(``collector.models.Event``) and then stores each event in one of two ways:

- ``create_pubsub_app``: publishes every event with the high-level
  ``google.cloud.pubsub_v1.PublisherClient`` and its default batch settings, awaiting each
  publish future with ``asyncio.wrap_future``. Reads ``BENCH_PUBSUB_TOPIC`` and, like every
  Google client, ``PUBSUB_EMULATOR_HOST``.
- ``create_file_app``: appends the request's events to one NDJSON file and fsyncs it, once per
  request, in Starlette's thread pool. Reads ``BENCH_FILE_PATH``.

It has no API keys, CORS, rate limits or enrichment, so it does less work per event than the
collector. Run one with uvicorn's factory flag:

    BENCH_FILE_PATH=/tmp/events.ndjson uvicorn --factory bench.apps.obvious:create_file_app
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from google.cloud import pubsub_v1
from pydantic import AwareDatetime, BaseModel, ConfigDict, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from collector.models import Event


class Batch(BaseModel):
    """The tracker's request body: ``{"sent_at": ..., "events": [...]}``."""

    model_config = ConfigDict(extra="forbid")

    sent_at: AwareDatetime | None = None
    events: list[Event]


_BATCH_ADAPTER = TypeAdapter(Batch)


async def read_batch(request: Request) -> Batch:
    """Validate the body as JSON against ``Batch``, or raise a 422 with pydantic's errors.

    A ``batch: Batch`` parameter would be the shortest route, but FastAPI validates the
    decoded JSON in Python mode, where the strict event models reject ISO strings for
    datetimes and UUIDs. ``validate_json`` applies JSON-mode rules, as the collector does.
    """
    try:
        return _BATCH_ADAPTER.validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_input=False)) from None


def create_pubsub_app() -> FastAPI:
    topic = os.environ["BENCH_PUBSUB_TOPIC"]
    publisher = pubsub_v1.PublisherClient()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        publisher.stop()

    app = FastAPI(lifespan=lifespan)

    @app.post("/collect")
    async def collect(request: Request) -> dict[str, int]:
        batch = await read_batch(request)
        futures = [
            asyncio.wrap_future(
                publisher.publish(
                    topic, event.model_dump_json().encode(), event_name=event.event_name
                )
            )
            for event in batch.events
        ]
        await asyncio.gather(*futures)
        return {"accepted": len(futures)}

    return app


def create_file_app() -> FastAPI:
    path = Path(os.environ["BENCH_FILE_PATH"])
    file = path.open("ab")

    def append(lines: bytes) -> None:
        file.write(lines)
        file.flush()
        os.fsync(file.fileno())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        file.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/collect")
    async def collect(request: Request) -> dict[str, int]:
        batch = await read_batch(request)
        lines = b"".join(event.model_dump_json().encode() + b"\n" for event in batch.events)
        await run_in_threadpool(append, lines)
        return {"accepted": len(batch.events)}

    return app
