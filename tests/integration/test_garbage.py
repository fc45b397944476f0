"""The infer path leaves no reference cycles behind, which is what lets the server run the
garbage collector rarely (``modelport serve`` sets ``GC_THRESHOLD``): a request's objects are
freed by reference counting as soon as it is answered.

The app is called as an ASGI server calls it, with no HTTP client in the process, so every
object the collector finds was made by modelport's side of a request."""

from __future__ import annotations

import asyncio
import collections
import gc
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from modelport.app import ModelportApp, create_app
from modelport.cli.serve import GC_THRESHOLD, tune_gc
from modelport.demo.models import build_ranker, ranker_config

from .conftest import TENANT, Push, issue_key, push_models, settings_for

pytestmark = pytest.mark.integration

CONCURRENCY = 64
WAVES = 5


async def _infer(app: ModelportApp, key: str, body: bytes) -> tuple[int, bytes]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v2/models/ranker/infer",
        "raw_path": b"/v2/models/ranker/infer",
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], sent[1]["body"]


async def test_infer_requests_leave_no_cyclic_garbage(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    ranker = Push("ranker", build_ranker(tmp_path / "ranker.onnx"), ranker_config(), required=True)
    await asyncio.to_thread(push_models, tmp_path, database_url, [ranker])
    key = await asyncio.to_thread(issue_key, tmp_path, database_url, TENANT, ["infer"])
    app = create_app(settings_for(tmp_path, database_url), on_started=tune_gc)
    rows = np.random.default_rng(3).standard_normal((CONCURRENCY, 64)).astype(np.float32)
    bodies = [
        orjson.dumps(
            {
                "id": f"r{i}",
                "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}],
            }
        )
        for i, row in enumerate(rows.tolist())
    ]

    async def wave() -> None:
        answers = await asyncio.gather(*(_infer(app, key, body) for body in bodies))
        assert [status for status, _ in answers] == [200] * CONCURRENCY
        ids = [orjson.loads(payload)["id"] for _, payload in answers]
        assert ids == [f"r{i}" for i in range(CONCURRENCY)]

    async with app.lifespan(app.api):
        assert gc.get_threshold()[0] == GC_THRESHOLD
        await wave()  # the first requests fill caches (key lookup, metrics children)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(WAVES):
                await wave()
            gc.collect()
            kinds = collections.Counter(type(o).__qualname__ for o in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()

    # A cycle per request (a frame kept by an exception's traceback, a future and its
    # callback, ...) would leave hundreds of objects here; background work (the registry's
    # polling through SQLAlchemy) may leave a handful.
    found = sum(kinds.values())
    assert found < 50, f"{found} objects in reference cycles after 320 requests: {kinds}"
