"""``collector send``: post an NDJSON file of client events in batches, with retries."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass
class SendResult:
    """Totals for one ``send`` run."""

    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    requests: int = 0
    # The first few rejection reasons, as "field: message".
    reasons: list[str] = field(default_factory=list)


def read_batches(path: Path, batch_size: int) -> list[list[object]]:
    """Read client events, one JSON object per line, grouped into batches."""
    batches: list[list[object]] = []
    current: list[object] = []
    with Path(path).open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                current.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON: {exc}") from None
            if len(current) >= batch_size:
                batches.append(current)
                current = []
    if current:
        batches.append(current)
    return batches


def send_file(
    path: Path,
    url: str,
    key: str,
    batch_size: int = 200,
    concurrency: int = 4,
    retries: int = 5,
    progress: bool = True,
) -> SendResult:
    """Post every event of ``path``; a batch that still fails after ``retries`` counts as failed."""
    batches = read_batches(path, batch_size)
    return asyncio.run(_send_all(batches, url, key, concurrency, retries, progress))


async def _send_all(
    batches: list[list[object]], url: str, key: str, concurrency: int, retries: int, progress: bool
) -> SendResult:
    result = SendResult()
    total = sum(len(batch) for batch in batches)
    queue: asyncio.Queue[list[object]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    started = time.monotonic()
    headers = {"X-API-Key": key, "Content-Type": "application/json"}

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            body = orjson.dumps({"sent_at": _now(), "events": batch})
            await _post(client, url, body, len(batch), headers, retries, result)
            if progress:
                _draw(result, total, started)

    async with httpx.AsyncClient(timeout=30.0) as client:
        await asyncio.gather(*(worker(client) for _ in range(max(1, concurrency))))
    if progress:
        _draw(result, total, started)
        sys.stderr.write("\n")
    return result


async def _post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    count: int,
    headers: dict[str, str],
    retries: int,
    result: SendResult,
) -> None:
    for attempt in range(retries + 1):
        result.requests += 1
        try:
            response = await client.post(url, content=body, headers=headers)
        except httpx.TransportError:
            status, wait = 0, None
        else:
            status = response.status_code
            if status in (200, 422):
                report = response.json()
                result.accepted += report["accepted"]
                result.rejected += len(report["rejected"])
                for item in report["rejected"]:
                    if len(result.reasons) >= 5:
                        break
                    error = item["errors"][0] if item["errors"] else {"field": "", "message": ""}
                    result.reasons.append(f"{error['field']}: {error['message']}")
                return
            wait = response.headers.get("retry-after")
            if status not in RETRY_STATUSES:
                print(f"request failed with {status}: {response.text[:200]}", file=sys.stderr)
                break
        if attempt < retries:
            delay = float(wait) if wait and wait.isdigit() else min(8.0, 0.25 * 2**attempt)
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311  # nosec B311  # jitter
    result.failed += count


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _draw(result: SendResult, total: int, started: float) -> None:
    if not sys.stderr.isatty():
        return
    done = result.accepted + result.rejected + result.failed
    width = 30
    filled = int(width * done / total) if total else width
    rate = done / max(time.monotonic() - started, 1e-6)
    bar = "#" * filled + "-" * (width - filled)
    sys.stderr.write(f"\r[{bar}] {done}/{total} events  {rate:,.0f}/s")
    sys.stderr.flush()
