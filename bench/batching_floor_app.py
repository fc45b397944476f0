"""The batching floor for the inference benchmark: the HTTP floor plus a minimal dynamic batcher.

What any batching OIP server on modelport's stack has to do at minimum, and nothing more: read
the body, parse it with orjson, turn the first input's data into a numpy array, queue it with
one future, stack the queued rows into one onnxruntime call in a worker thread (flushed at 128
rows or 1 ms after the oldest request, like the demo ranker's config), slice the output back
and answer an OIP JSON response. No authentication, quotas, validation against a signature,
routing, request ids, metrics or logging: it measures the price of batching itself on this
stack, which modelport pays on top of the HTTP floor before any of its own features.

    python bench/batching_floor_app.py --port 8082 --model ranker.onnx   # binds 127.0.0.1 only

``GET`` on any path answers ``200 {}`` so the benchmark can poll it for readiness.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from floor_app import serve

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BATCH = 128
DELAY_S = 0.001
JSON_HEADERS = [(b"content-type", b"application/json")]


class MiniBatcher:
    """One queue, one compute slot, flush on size or delay."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.input = session.get_inputs()[0].name
        self.output = session.get_outputs()[0].name
        self.pool = ThreadPoolExecutor(1)
        self.queue: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self.wake: asyncio.Event | None = None

    def start(self) -> None:
        self.wake = asyncio.Event()
        asyncio.get_running_loop().create_task(self.dispatch())

    def submit(self, row: np.ndarray) -> asyncio.Future[np.ndarray]:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.queue.append((row, future))
        assert self.wake is not None
        self.wake.set()
        return future

    async def dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.wake is not None
        while True:
            await self.wake.wait()
            self.wake.clear()
            if len(self.queue) < MAX_BATCH:
                await asyncio.sleep(DELAY_S)
            batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
            if self.queue:
                self.wake.set()
            if not batch:
                continue
            stacked = np.concatenate([row for row, _ in batch])
            (out,) = await loop.run_in_executor(
                self.pool, self.session.run, [self.output], {self.input: stacked}
            )
            for i, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result(out[i : i + 1])


def make_app(model_path: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    batcher = MiniBatcher(
        ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    batcher.start()
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
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        if scope["method"] != "POST":
            await _answer(send, 200, b"{}")
            return
        try:
            doc = orjson.loads(b"".join(chunks))
            tensor = doc["inputs"][0]
            row = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
            await _answer(send, 400, b'{"error":"bad request"}')
            return
        out = await batcher.submit(row)
        body = orjson.dumps(
            {
                "model_name": "ranker",
                "model_version": "1",
                "outputs": [
                    {
                        "name": batcher.output,
                        "datatype": "FP32",
                        "shape": list(out.shape),
                        "data": out.reshape(-1),
                    }
                ],
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        await _answer(send, 200, body)

    return app


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True, help="the ranker's ONNX file")
    args = parser.parse_args()
    serve(make_app(args.model), args.port)


if __name__ == "__main__":
    main()
