"""Concurrent single-row requests are batched by the server and each gets its own answer."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from .conftest import Server
from .oip import metric

pytestmark = pytest.mark.integration

CONCURRENCY = 64


async def test_concurrent_single_row_requests(main_server: Server) -> None:
    session = ort.InferenceSession(
        str(main_server.models["ranker"]), providers=["CPUExecutionProvider"]
    )
    labels = {"model": "ranker", "version": "1"}
    rng = np.random.default_rng(11)

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with main_server.async_client(limits=limits) as client:
        before = (await client.get("/metrics")).text
        total_rows = 0
        for attempt in range(3):
            rows = rng.standard_normal((CONCURRENCY, 64)).astype(np.float32)
            (expected,) = session.run(["score"], {"input": rows})

            async def one(i: int, rows: np.ndarray = rows, attempt: int = attempt) -> float:
                doc = {
                    "id": f"row-{attempt}-{i}",
                    "inputs": [
                        {
                            "name": "input",
                            "datatype": "FP32",
                            "shape": [1, 64],
                            "data": rows[i].tolist(),
                        }
                    ],
                }
                response = await client.post("/v2/models/ranker/infer", json=doc)
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["id"] == f"row-{attempt}-{i}"
                assert body["outputs"][0]["shape"] == [1, 1]
                return float(body["outputs"][0]["data"][0])

            scores = await asyncio.gather(*(one(i) for i in range(CONCURRENCY)))
            total_rows += CONCURRENCY
            np.testing.assert_allclose(
                np.asarray(scores, dtype=np.float32), expected[:, 0], rtol=1e-5, atol=1e-6
            )

            after = (await client.get("/metrics")).text
            batches = metric(after, "modelport_batch_size_count", **labels) - metric(
                before, "modelport_batch_size_count", **labels
            )
            singles = metric(after, "modelport_batch_size_bucket", **labels, le="1.0") - metric(
                before, "modelport_batch_size_bucket", **labels, le="1.0"
            )
            if batches > singles:
                break
        else:
            pytest.fail(f"no batch of more than one row formed in {total_rows} concurrent requests")

    # Every row was computed exactly once, in fewer runtime calls than requests.
    rows_computed = metric(after, "modelport_batch_size_sum", **labels) - metric(
        before, "modelport_batch_size_sum", **labels
    )
    assert rows_computed == total_rows
    assert batches < total_rows
    ok = metric(after, "modelport_inference_requests_total", **labels, outcome="ok") - metric(
        before, "modelport_inference_requests_total", **labels, outcome="ok"
    )
    assert ok == total_rows
    assert metric(after, "modelport_queue_depth_rows", **labels) == 0
