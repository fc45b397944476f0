"""The minilm text-embedding model through the live server."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from .conftest import Server
from .oip import binary_request, decode_response

pytestmark = pytest.mark.integration

GUITAR = "A man is playing a guitar."
INSTRUMENT = "Someone plays an instrument."
STOCKS = "The stock market fell sharply today."

TEXTS = [
    GUITAR,
    INSTRUMENT,
    STOCKS,
    "",
    "short",
    "Ünïcode, emoji ✓ and punctuation!?",
    " ".join(["a considerably longer sentence that keeps going"] * 12),
]


def embed(client: httpx.Client, texts: list[str]) -> np.ndarray:
    doc = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
    response = client.post("/v2/models/minilm/infer", json=doc)
    assert response.status_code == 200, response.text
    [out] = response.json()["outputs"]
    assert out["name"] == "embedding" and out["datatype"] == "FP32"
    assert out["shape"] == [len(texts), 384]
    return np.asarray(out["data"], dtype=np.float32).reshape(len(texts), 384)


def test_semantic_similarity(client: httpx.Client) -> None:
    guitar, instrument, stocks = embed(client, [GUITAR, INSTRUMENT, STOCKS])
    close = float(guitar @ instrument)
    unrelated = float(guitar @ stocks)
    assert close > unrelated + 0.3, (close, unrelated)
    assert float(instrument @ stocks) < close


def test_embeddings_are_unit_norm(client: httpx.Client) -> None:
    vectors = embed(client, TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(vectors).all()


def test_a_batch_equals_one_text_at_a_time(client: httpx.Client) -> None:
    batched = embed(client, TEXTS)
    singles = np.stack([embed(client, [text])[0] for text in TEXTS])
    np.testing.assert_allclose(batched, singles, atol=1e-5, rtol=0)


def test_binary_texts_and_binary_output(client: httpx.Client) -> None:
    texts = np.array([t.encode() for t in TEXTS[:3]], dtype=object)
    body, headers = binary_request(
        [("text", "BYTES", texts)], parameters={"binary_data_output": True}
    )
    response = client.post("/v2/models/minilm/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    _, arrays = decode_response(response)
    np.testing.assert_allclose(arrays["embedding"], embed(client, TEXTS[:3]), atol=1e-5, rtol=0)


async def test_concurrent_requests_batched_by_the_server_match(main_server: Server) -> None:
    """Single-text requests arriving together are batched (padded together) by the server; each
    still gets the embedding it would get alone. One invalid text among them fails alone."""
    with main_server.client() as client:
        expected = np.stack([embed(client, [text])[0] for text in TEXTS])

    bad_body, bad_headers = binary_request(
        [("text", "BYTES", np.array([b"\xff\xfe not utf-8"], dtype=object))]
    )

    async with main_server.async_client() as aclient:

        async def one(text: str) -> np.ndarray:
            doc = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}
            response = await aclient.post("/v2/models/minilm/infer", json=doc)
            assert response.status_code == 200, response.text
            return np.asarray(response.json()["outputs"][0]["data"], dtype=np.float32)

        async def bad() -> httpx.Response:
            return await aclient.post(
                "/v2/models/minilm/infer", content=bad_body, headers=bad_headers
            )

        rounds = 3
        tasks = [one(text) for _ in range(rounds) for text in TEXTS]
        *results, bad_response = await asyncio.gather(*tasks, bad())

    assert bad_response.status_code == 400, bad_response.text
    got = np.stack(results).reshape(rounds, len(TEXTS), 384)
    for r in range(rounds):
        np.testing.assert_allclose(got[r], expected, atol=1e-5, rtol=0)


def test_texts_longer_than_max_sequence_length_are_truncated(client: httpx.Client) -> None:
    long_text = "word " * 2000
    [vector] = embed(client, [long_text])
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
