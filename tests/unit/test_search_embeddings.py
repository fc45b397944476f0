"""Query embeddings: cached per tenant and model, and identical concurrent queries embed once.

The inference service here is a tiny stand-in that counts calls and answers a vector derived
from the text; what is tested is the cache and the single flight in front of it.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import numpy as np
import pytest

from modelport.errors import ModelNotReady
from modelport.services.inference import InferenceService, InferResult
from modelport.services.search_embeddings import Embedder


class CountingInference:
    def __init__(self, delay_s: float = 0.05, fail: bool = False) -> None:
        self.calls: list[tuple[str, list[bytes]]] = []
        self.delay_s = delay_s
        self.fail = fail

    async def infer(self, tenant: str, model: str, version: Any, request: Any) -> InferResult:
        texts = list(request.inputs[0].array)
        self.calls.append((tenant, texts))
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise ModelNotReady("loading")
        vectors = np.array([[len(t), hash((tenant, t)) % 97, 1.0] for t in texts], np.float32)
        return InferResult(model, "1", [("embedding", vectors, False)], None)


def embedder(inference: CountingInference, size: int = 100) -> Embedder:
    return Embedder(cast(InferenceService, inference), cache_size=size, ttl_s=60)


async def test_identical_concurrent_queries_embed_once() -> None:
    inference = CountingInference()
    queries = embedder(inference)

    answers = await asyncio.gather(
        *(queries.query("acme", "minilm", "grey sofa") for _ in range(20))
    )

    assert len(inference.calls) == 1
    assert all(np.array_equal(v, answers[0][0]) for v, _ in answers)
    assert sum(not reused for _, reused in answers) == 1


async def test_the_cache_is_per_tenant() -> None:
    inference = CountingInference(delay_s=0)
    queries = embedder(inference)

    await queries.query("acme", "minilm", "grey sofa")
    _, reused = await queries.query("acme", "minilm", "grey sofa")
    _, other_tenant_reused = await queries.query("rival", "minilm", "grey sofa")

    assert reused and not other_tenant_reused
    assert [tenant for tenant, _ in inference.calls] == ["acme", "rival"]


async def test_a_failure_reaches_every_waiter_and_is_not_cached() -> None:
    inference = CountingInference(fail=True)
    queries = embedder(inference)

    results = await asyncio.gather(
        *(queries.query("acme", "minilm", "lamp") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ModelNotReady) for r in results)
    assert len(inference.calls) == 1
    inference.fail = False
    _, reused = await queries.query("acme", "minilm", "lamp")
    assert not reused


async def test_the_least_recently_used_query_leaves_a_full_cache() -> None:
    inference = CountingInference(delay_s=0)
    queries = embedder(inference, size=2)
    for text in ("a", "b", "a", "c"):
        await queries.query("acme", "minilm", text)

    assert (await queries.query("acme", "minilm", "a"))[1] is True
    assert (await queries.query("acme", "minilm", "b"))[1] is False


@pytest.mark.parametrize("count", [1, 33, 70])
async def test_documents_go_in_chunks_of_the_versions_batch_size(count: int) -> None:
    inference = CountingInference(delay_s=0)

    class Entry:
        class config:
            class batching:
                max_batch_size = 32

    async def resolve(tenant: str, model: str, version: Any) -> Any:
        return Entry

    inference.resolve = resolve  # type: ignore[attr-defined]
    vectors = await embedder(inference).documents("acme", "minilm", [f"t{i}" for i in range(count)])

    assert vectors.shape == (count, 3)
    assert all(len(texts) <= 32 for _, texts in inference.calls)
