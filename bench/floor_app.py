"""The HTTP floor for the inference benchmark: a bare ASGI app on modelport's server stack.

It does what any OIP v2 JSON server has to do at minimum and nothing more: read the whole body,
parse it with orjson, and answer a constant OIP-shaped JSON response (no framework, no model).
It runs on the same stack as ``modelport serve`` (uvicorn, uvloop, httptools, one worker, access
log off), so its throughput is the ceiling a Python server on this stack can reach.

    python bench/floor_app.py --port 8081        # binds 127.0.0.1 only

``GET`` on any path answers ``200 {}`` so the benchmark can poll it for readiness.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

ANSWER = orjson.dumps(
    {
        "model_name": "ranker",
        "model_version": "1",
        "outputs": [{"name": "score", "shape": [1, 1], "datatype": "FP32", "data": [0.5]}],
    }
)
EMPTY = b"{}"


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


ANSWER_HEADERS = _headers(ANSWER)
EMPTY_HEADERS = _headers(EMPTY)
BAD_HEADERS = _headers(b'{"error":"bad json"}')


async def app(scope: Scope, receive: Receive, send: Send) -> None:
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
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 200, "headers": EMPTY_HEADERS})
        await send({"type": "http.response.body", "body": EMPTY})
        return
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        await send({"type": "http.response.start", "status": 400, "headers": BAD_HEADERS})
        await send({"type": "http.response.body", "body": b'{"error":"bad json"}'})
        return
    await send({"type": "http.response.start", "status": 200, "headers": ANSWER_HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


def serve(asgi_app: Any, port: int) -> None:
    """Run ``asgi_app`` on 127.0.0.1 with the server settings ``modelport serve`` uses."""
    uvicorn.run(
        asgi_app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # as modelport serve runs
        log_level="warning",
        workers=1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    serve(app, parser.parse_args().port)


if __name__ == "__main__":
    main()
