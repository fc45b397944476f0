"""Relevance evaluation: a collection loaded into a scratch tenant, every query in each mode.

The collection goes through the product path end to end: catalog import → outbox → stream →
the search indexer (embedding through the served model) → ``SearchService.search``. Documents
become products (title; the text as description; ids mapped to catalog-safe ones). Each query
asks for 100 hits without rerank; nDCG@10, recall@100 and MRR@10 are averaged over the queries
that have judgements.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from modelport.retrieval.metrics import mrr_at, ndcg_at, recall_at
from modelport.services.product_input import MAX_DESCRIPTION, MAX_TITLE
from modelport.services.relevance_data import Collection
from modelport.services.search import MAX_QUERY_CHARS, MODES, SearchRequest

if TYPE_CHECKING:
    from modelport.wiring import Services

DEPTH = 100


def products_of(collection: Collection) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The documents as catalog products, and product id -> document id."""
    products, ids = [], {}
    for n, (doc_id, (title, text)) in enumerate(collection.documents.items()):
        sku = f"d{n}"
        ids[sku] = doc_id
        products.append(
            {
                "id": sku,
                "title": (title or text[:80] or doc_id)[:MAX_TITLE],
                # No category, brand or attributes: the embedded text is the document's own.
                "description": text[:MAX_DESCRIPTION],
            }
        )
    return products, ids


async def evaluate(
    services: Services,
    collection: Collection,
    tenant: str,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    search, indexer = services.search, services.search_indexer
    if search is None or indexer is None:
        raise RuntimeError("evaluation needs the search service (a server's services)")
    products, ids = products_of(collection)
    started = time.monotonic()
    for start in range(0, len(products), 1000):
        chunk = products[start : start + 1000]
        report = await services.catalog.import_ndjson(
            tenant, b"\n".join(orjson.dumps(p) for p in chunk)
        )
        if report.counts["failed"]:
            raise RuntimeError(f"{report.counts['failed']} documents were refused by the catalog")
    await indexer.ready.wait()
    while (
        len(indexer.indexes.lexical(tenant)) < len(products)
        or not indexer.indexes.has_vectors(tenant)
        or len(indexer.indexes.vectors(tenant)) < len(products)
    ):
        if progress is not None:
            progress("index", len(indexer.indexes.lexical(tenant)), len(products))
        await asyncio.sleep(0.5)
    indexed_s = time.monotonic() - started
    judged = [q for q in collection.queries if collection.judgements.get(q)]
    results: dict[str, Any] = {}
    for mode in MODES:
        totals = {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
        began = time.monotonic()
        for n, query_id in enumerate(judged):
            request = SearchRequest(
                query=collection.queries[query_id][:MAX_QUERY_CHARS] or "?",
                mode=mode,
                k=DEPTH,
                rerank=False,
                include_products=False,
            )
            answer = await search.search(tenant, request, f"eval-{query_id}")
            ranked = [ids[h.id] for h in answer.hits]
            gains = collection.judgements[query_id]
            totals["ndcg@10"] += ndcg_at(ranked, gains, 10)
            totals["recall@100"] += recall_at(ranked, gains, 100)
            totals["mrr@10"] += mrr_at(ranked, gains, 10)
            if progress is not None and n % 25 == 0:
                progress(mode, n, len(judged))
        results[mode] = {
            **{name: round(value / max(len(judged), 1), 4) for name, value in totals.items()},
            "queries_s": round(len(judged) / max(time.monotonic() - began, 1e-9), 1),
        }
    return {
        "collection": collection.name,
        "documents": len(products),
        "queries": len(judged),
        "indexed_s": round(indexed_s, 1),
        "modes": results,
    }
