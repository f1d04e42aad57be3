"""The ceiling: a bare ASGI app that reads the request body and responds 204 No Content.

No routing, validation or storage happens, so under the same uvicorn settings as the
collector (uvloop, httptools, one worker) its request rate is the maximum that any app can
reach on this server.

    uvicorn bench.apps.ceiling:app --loop uvloop --http httptools
"""

from __future__ import annotations

from typing import Any

_NO_CONTENT = {"type": "http.response.start", "status": 204, "headers": []}
_EMPTY_BODY = {"type": "http.response.body", "body": b""}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            break
    await send(_NO_CONTENT)
    await send(_EMPTY_BODY)
