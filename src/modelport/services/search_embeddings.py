"""Texts to vectors through the serving core: the tenant's text-embedding model, its batcher.

Documents go through ``InferenceService.infer`` in chunks of the version's batch size, sent
together so its batcher packs them. Queries go the same way, behind a cache of their own:
keyed by (tenant, model, text), so no tenant ever reads another's entry, least recently used
out, each entry kept ``ttl_s``. Identical queries that miss together embed once (single
flight): the first computes, the others await its answer or its error.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

import numpy as np

from modelport.errors import InferenceFailed
from modelport.services.inference import InferenceService
from modelport.serving.codec import InferRequest, InputTensor

INPUT = "text"

_Key = tuple[str, str, str]


class Embedder:
    def __init__(self, inference: InferenceService, *, cache_size: int, ttl_s: float) -> None:
        self._inference = inference
        self._cache: OrderedDict[_Key, tuple[float, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size
        self._ttl_s = ttl_s
        self._flights: dict[_Key, asyncio.Future[np.ndarray]] = {}
        self.computed = 0
        """Queries embedded by the model (not served from the cache or another's flight)."""

    async def documents(self, tenant: str, model: str, texts: list[str]) -> np.ndarray:
        """One unit vector per text, in order."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        entry = await self._inference.resolve(tenant, model, None)
        chunk = max(1, entry.config.batching.max_batch_size)
        parts = await asyncio.gather(
            *(self._embed(tenant, model, texts[i : i + chunk]) for i in range(0, len(texts), chunk))
        )
        return np.concatenate(parts)

    async def query(self, tenant: str, model: str, text: str) -> tuple[np.ndarray, bool]:
        """The query's vector, and whether it came without running the model."""
        key = (tenant, model, text)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self._ttl_s:
            self._cache.move_to_end(key)
            return cached[1], True
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight), True
        flight = self._flights[key] = asyncio.get_running_loop().create_future()
        try:
            vector = (await self._embed(tenant, model, [text]))[0]
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            flight.set_result(vector)
            self.computed += 1
            if self._cache_size:
                self._cache[key] = (time.monotonic(), vector)
                self._cache.move_to_end(key)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            return vector, False
        finally:
            del self._flights[key]

    async def _embed(self, tenant: str, model: str, texts: list[str]) -> np.ndarray:
        array = np.array([t.encode() for t in texts], dtype=object)
        request = InferRequest(inputs=[InputTensor(INPUT, "BYTES", (len(texts),), array)])
        result = await self._inference.infer(tenant, model, None, request)
        if not result.outputs:
            raise InferenceFailed(f"model '{model}' answered no embedding")
        vectors = np.asarray(result.outputs[0][1], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise InferenceFailed(
                f"model '{model}' is not a text-embedding model (answered {vectors.shape})"
            )
        return vectors
