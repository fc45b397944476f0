"""Search: a tenant's query through both retrievers, fused, optionally re-ranked, with facets.

    query ─┬─ semantic: embed (cache, single flight) → vector index, filter inside the walk
           └─ lexical:  field-weighted BM25, filter inside the query          ─┐
    fuse (RRF, k per tenant or request) ← both rankings of ``depth`` hits each ─┘
    → rerank the fused head with a served model (if the tenant declares one)
    → page [offset, offset + k), facet counts over every fused candidate, products for the page

``mode`` picks the retrievers: ``hybrid`` (both, the default), ``semantic`` or ``lexical``.
Each retriever applies the filter while it searches, so a filter keeping 1 % of the catalog
still fills the page when enough items pass. Facet counts are over the fused candidates (up to
``depth`` per retriever): they describe what the query found, not the whole catalog. A tenant
without its embedding model is searched lexically in hybrid mode (the answer says so in
``warnings``); semantic mode then answers the model's 404.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from modelport.errors import InvalidInput, NotFound, Unavailable
from modelport.retrieval.fusion import Fused, reciprocal_rank_fusion
from modelport.services.inference import InferenceService
from modelport.services.search_documents import SearchConfigs, TenantSearch
from modelport.services.search_documents import facets as product_facets
from modelport.services.search_embeddings import Embedder
from modelport.services.search_indexer import SearchIndexer
from modelport.serving.codec import InferRequest, InputTensor
from modelport.stores.catalog import CatalogStore
from modelport.stores.search_filter import Facets, SearchFilter

Mode = Literal["hybrid", "semantic", "lexical"]
MODES: tuple[Mode, ...] = ("hybrid", "semantic", "lexical")
FACETS = ("brand", "category", "availability")
ATTRIBUTE_FACET = "attributes."
MAX_K = 100
MAX_OFFSET = 1000
MAX_QUERY_CHARS = 1000
#: Feature columns a rerank model receives, in order (zero-padded to its input width).
RERANK_FEATURES = (
    "semantic_score",
    "lexical_score",
    "fused_score",
    "semantic_reciprocal_rank",
    "lexical_reciprocal_rank",
)


@dataclass(frozen=True, slots=True)
class SearchRequest:
    query: str
    mode: Mode = "hybrid"
    where: SearchFilter = field(default_factory=SearchFilter)
    facets: tuple[str, ...] = ()
    k: int = 10
    offset: int = 0
    rrf_k: float | None = None
    rerank: bool | None = None
    """None: rerank when the tenant declares a model; False: never; True: the model must exist."""
    include_products: bool = True


@dataclass(slots=True)
class RetrieverHit:
    rank: int
    score: float


@dataclass(slots=True)
class SearchHit:
    id: str
    score: float
    """The fused score (hybrid), the retriever's score (one mode), or the rerank score."""
    semantic: RetrieverHit | None = None
    lexical: RetrieverHit | None = None
    rerank: float | None = None
    product: dict[str, Any] | None = None


@dataclass(slots=True)
class SearchAnswer:
    request_id: str
    mode: Mode
    hits: list[SearchHit]
    facets: dict[str, dict[str, int]]
    candidates: int
    rrf_k: float | None
    timings_ms: dict[str, float]
    warnings: list[str] = field(default_factory=list)


class SearchService:
    def __init__(
        self,
        indexer: SearchIndexer,
        embedder: Embedder,
        inference: InferenceService,
        catalog: CatalogStore,
        configs: SearchConfigs,
        *,
        candidates: int = 100,
    ) -> None:
        self._indexer = indexer
        self._indexes = indexer.indexes
        self._embedder = embedder
        self._inference = inference
        self._catalog = catalog
        self._configs = configs
        self._candidates = candidates

    async def search(self, tenant: str, request: SearchRequest, request_id: str) -> SearchAnswer:
        started = time.perf_counter()
        _check(request)
        if not self._indexer.ready.is_set():
            raise Unavailable("the search index is being restored or built; retry shortly")
        config = self._configs.of(tenant)
        depth = max(self._candidates, request.offset + request.k)
        timings: dict[str, float] = {}
        warnings: list[str] = []
        semantic_on = request.mode in ("hybrid", "semantic")
        lexical_on = request.mode in ("hybrid", "lexical")

        async def semantic() -> list[tuple[str, float]]:
            at = time.perf_counter()
            try:
                vector, cached = await self._embedder.query(
                    tenant, config.embedding_model, request.query
                )
            except NotFound:
                if request.mode == "semantic":
                    raise
                warnings.append(
                    f"no embedding model '{config.embedding_model}' in this tenant: "
                    "lexical results only"
                )
                return []
            timings["embed"] = _ms(at)
            timings["embed_cached"] = 1.0 if cached else 0.0
            if not self._indexes.has_vectors(tenant):
                return []
            index = self._indexes.vectors(tenant)
            at = time.perf_counter()
            hits = await asyncio.to_thread(index.search, vector, depth, request.where)
            timings["semantic"] = _ms(at)
            return [(h.key, h.score) for h in hits]

        async def lexical() -> list[tuple[str, float]]:
            at = time.perf_counter()
            index = self._indexes.lexical(tenant)
            weights = {n: w for n, w in config.fields.items() if w > 0}
            hits = await asyncio.to_thread(
                index.search, request.query, depth, request.where, weights
            )
            timings["lexical"] = _ms(at)
            return [(h.key, h.score) for h in hits]

        semantic_hits, lexical_hits = await asyncio.gather(
            semantic() if semantic_on else _nothing(), lexical() if lexical_on else _nothing()
        )
        at = time.perf_counter()
        rrf_k = request.rrf_k or config.rrf_k
        fused = reciprocal_rank_fusion(
            {
                name: [key for key, _ in hits]
                for name, hits in (("semantic", semantic_hits), ("lexical", lexical_hits))
                if (name == "semantic" and semantic_on) or (name == "lexical" and lexical_on)
            },
            rrf_k,
        )
        scores = {"semantic": dict(semantic_hits), "lexical": dict(lexical_hits)}
        hits = [_hit(f, scores, request.mode) for f in fused]
        timings["fusion"] = _ms(at)
        if _wants_rerank(request, config):
            at = time.perf_counter()
            await self._rerank(tenant, config, hits, depth)
            timings["rerank"] = _ms(at)
        at = time.perf_counter()
        counts = await self._facet_counts(tenant, request.facets, [h.id for h in hits])
        page = hits[request.offset : request.offset + request.k]
        if request.include_products and page:
            products = await self._catalog.get_many(tenant, [h.id for h in page])
            for hit in page:
                product = products.get(hit.id)
                hit.product = None if product is None else product.to_json()
        timings["facets_and_products"] = _ms(at)
        timings["total"] = _ms(started)
        return SearchAnswer(
            request_id=request_id,
            mode=request.mode,
            hits=page,
            facets=counts,
            candidates=len(hits),
            rrf_k=rrf_k if request.mode == "hybrid" else None,
            timings_ms=timings,
            warnings=warnings,
        )

    async def _rerank(
        self, tenant: str, config: TenantSearch, hits: list[SearchHit], depth: int
    ) -> None:
        if config.rerank_model is None:
            raise NotFound("this tenant declares no rerank model (MODELPORT_SEARCH_TENANTS)")
        head = hits[: min(config.rerank_depth, depth)]
        if not head:
            return
        entry = await self._inference.resolve(tenant, config.rerank_model, None)
        spec = entry.signature.inputs[0]
        if spec.datatype != "FP32" or len(spec.shape) != 2 or spec.shape[1] < 1:
            raise InvalidInput(
                f"rerank model '{config.rerank_model}' must take one FP32 [n, features] input"
            )
        features = np.zeros((len(head), spec.shape[1]), dtype=np.float32)
        for row, hit in enumerate(head):
            values = _features(hit)
            features[row, : min(len(values), spec.shape[1])] = values[: spec.shape[1]]
        chunk = max(1, entry.config.batching.max_batch_size or len(head))
        scores: list[float] = []
        for start in range(0, len(head), chunk):
            part = features[start : start + chunk]
            request = InferRequest(inputs=[InputTensor(spec.name, "FP32", tuple(part.shape), part)])
            result = await self._inference.infer(tenant, config.rerank_model, None, request)
            scores.extend(np.asarray(result.outputs[0][1], dtype=np.float64).reshape(-1).tolist())
        for hit, score in zip(head, scores, strict=True):
            hit.rerank = score
            hit.score = score
        head.sort(key=lambda h: (-(h.rerank or 0.0), h.id))
        hits[: len(head)] = head

    async def _facet_counts(
        self, tenant: str, wanted: Sequence[str], keys: list[str]
    ) -> dict[str, dict[str, int]]:
        if not wanted:
            return {}
        known: dict[str, Facets]
        if self._indexes.has_vectors(tenant):
            known = await asyncio.to_thread(self._indexes.vectors(tenant).facets_of, keys)
        else:
            products = await self._catalog.get_many(tenant, keys)
            known = {k: product_facets(p.to_json()) for k, p in products.items()}
        counts: dict[str, dict[str, int]] = {}
        for name in wanted:
            counter: Counter[str] = Counter()
            for item in known.values():
                for value in _facet_values(item, name):
                    counter[value] += 1
            counts[name] = dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))
        return counts


def _check(request: SearchRequest) -> None:
    if request.mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}")
    if not request.query.strip():
        raise InvalidInput("query must hold some text")
    if len(request.query) > MAX_QUERY_CHARS:
        raise InvalidInput(f"query is longer than {MAX_QUERY_CHARS} characters")
    if not 1 <= request.k <= MAX_K:
        raise InvalidInput(f"k must be between 1 and {MAX_K}")
    if not 0 <= request.offset <= MAX_OFFSET:
        raise InvalidInput(f"offset must be between 0 and {MAX_OFFSET}")
    if request.rrf_k is not None and request.rrf_k <= 0:
        raise InvalidInput("rrf_k must be positive")
    for name in request.facets:
        if name not in FACETS and not (
            name.startswith(ATTRIBUTE_FACET) and len(name) > len(ATTRIBUTE_FACET)
        ):
            raise InvalidInput(f"facet {name!r}: facets are {', '.join(FACETS)} or attributes.NAME")
    where = request.where
    if (
        where.min_price is not None
        and where.max_price is not None
        and where.min_price > where.max_price
    ):
        raise InvalidInput("min_price is above max_price")


def _wants_rerank(request: SearchRequest, config: TenantSearch) -> bool:
    if request.rerank is None:
        return config.rerank_model is not None
    return request.rerank


def _hit(fused: Fused, scores: dict[str, dict[str, float]], mode: Mode) -> SearchHit:
    hit = SearchHit(fused.key, fused.score)
    for name, rank in fused.ranks.items():
        found = RetrieverHit(rank, scores[name][fused.key])
        if name == "semantic":
            hit.semantic = found
        else:
            hit.lexical = found
    if mode != "hybrid":  # one retriever: its own score says more than 1 / (k + rank)
        only = hit.semantic or hit.lexical
        hit.score = only.score if only is not None else 0.0
    return hit


def _features(hit: SearchHit) -> list[float]:
    return [
        hit.semantic.score if hit.semantic else 0.0,
        hit.lexical.score if hit.lexical else 0.0,
        hit.score,
        1.0 / hit.semantic.rank if hit.semantic else 0.0,
        1.0 / hit.lexical.rank if hit.lexical else 0.0,
    ]


def _facet_values(item: Facets, name: str) -> list[str]:
    if name == "brand":
        return [item.brand] if item.brand else []
    if name == "category":
        return [" > ".join(item.category)] if item.category else []
    if name == "availability":
        return [item.availability]
    value = item.attributes.get(name.removeprefix(ATTRIBUTE_FACET))
    values = value if isinstance(value, list | tuple) else [] if value is None else [value]
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in values]


async def _nothing() -> list[tuple[str, float]]:
    return []


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 3)
