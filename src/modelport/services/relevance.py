"""Relevance collections and the measures ``modelport search eval`` reports.

A collection is documents, queries and judgments (``qrels``: for each query, the documents
judged relevant and how much). Two common formats load:

* **BEIR** (a folder): ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl``
  (``_id``, ``text``) and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score``, with a
  header line); a score of 0 or less is not relevant.
* **SMART/TREC** classic collections (a folder such as Cranfield's): a document file of ``.I id``
  records with ``.T`` title, ``.W`` text and other fields, a query file of ``.I n`` / ``.W``
  records, and a judgments file of ``query doc grade`` lines. Cranfield numbers its queries
  1..225 *in file order* in the judgments, whatever their ``.I`` numbers say, and grades 1 (a
  complete answer) to 4 (minimum interest), -1 not relevant: grades become gains 4..1, so
  ``gain = 5 - grade``. TREC ``qrels`` (``query 0 doc relevance``) load the same way.

Measures, per query, averaged over the queries with at least one relevant document:
nDCG@10 (graded gains, log2 discount, against the ideal ordering of the judged documents),
recall@100 (share of the relevant documents in the first 100) and MRR@10 (1 / rank of the
first relevant document within 10, else 0).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    title: str
    text: str


@dataclass(slots=True)
class Collection:
    name: str
    documents: list[Document]
    queries: dict[str, str]
    """Query id -> text, in file order."""
    judgments: dict[str, dict[str, float]] = field(default_factory=dict)
    """Query id -> {document id: gain > 0}."""

    def judged_queries(self) -> list[str]:
        """The queries with at least one relevant document, in file order."""
        return [q for q in self.queries if self.judgments.get(q)]


class CollectionError(ValueError):
    """The folder does not hold a collection in a format modelport reads."""


def load_collection(folder: Path, split: str = "test") -> Collection:
    """The BEIR or SMART/TREC collection in ``folder`` (recognised by its files)."""
    if not folder.is_dir():
        raise CollectionError(f"{folder} is not a folder")
    if (folder / "corpus.jsonl").exists():
        return load_beir(folder, split)
    names = {p.name for p in folder.iterdir()}
    docs = _first(names, ("cran.all.1400",), r"\.all(\.\d+)?$")
    queries = _first(names, ("cran.qry",), r"\.(qry|queries)$")
    qrels = _first(names, ("cranqrel", "qrels"), r"qrels?(\.txt)?$")
    if docs and queries and qrels:
        return load_smart(folder / docs, folder / queries, folder / qrels, folder.name)
    raise CollectionError(
        f"{folder} holds neither a BEIR collection (corpus.jsonl, queries.jsonl, "
        f"qrels/{split}.tsv) nor a SMART one (a *.all document file, a *.qry query file and "
        "a qrels file)"
    )


def load_beir(folder: Path, split: str = "test") -> Collection:
    documents = []
    for line in _lines(folder / "corpus.jsonl"):
        row = json.loads(line)
        documents.append(
            Document(str(row["_id"]), str(row.get("title") or ""), str(row.get("text") or ""))
        )
    queries = {}
    for line in _lines(folder / "queries.jsonl"):
        row = json.loads(line)
        queries[str(row["_id"])] = str(row["text"])
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if not qrels_file.exists():
        raise CollectionError(f"{qrels_file} is missing (the judgments of split {split!r})")
    judgments: dict[str, dict[str, float]] = {}
    for number, line in enumerate(_lines(qrels_file)):
        parts = line.split("\t")
        if number == 0 and not _is_number(parts[-1]):
            continue  # the header
        query, doc, score = parts[0], parts[1], float(parts[-1])
        if score > 0:
            judgments.setdefault(query, {})[doc] = score
    # BEIR's test queries are those judged in the split.
    queries = {q: text for q, text in queries.items() if q in judgments}
    return Collection(folder.name, documents, queries, judgments)


def load_smart(docs: Path, queries: Path, qrels: Path, name: str) -> Collection:
    documents = [
        Document(
            record.get("I", "").strip(), _flat(record.get("T", "")), _flat(record.get("W", ""))
        )
        for record in _smart_records(docs.read_text(errors="replace"))
    ]
    # Judgments number queries 1..n in file order (Cranfield's .I numbers skip values).
    texts = [_flat(r.get("W", "")) for r in _smart_records(queries.read_text(errors="replace"))]
    query_map = {str(n): text for n, text in enumerate(texts, start=1)}
    judgments: dict[str, dict[str, float]] = {}
    for line in _lines(qrels):
        parts = line.split()
        if len(parts) == 4:  # TREC: query iteration doc relevance (higher is better)
            query, doc, gain = parts[0], parts[2], float(parts[3])
        elif len(parts) == 3:  # SMART/Cranfield: query doc grade (1 best .. 4, -1 none)
            grade = int(parts[2])
            query, doc, gain = parts[0], parts[1], float(5 - grade) if 1 <= grade <= 4 else 0.0
        else:
            raise CollectionError(f"{qrels}: cannot read the judgment line {line!r}")
        if gain > 0:
            judgments.setdefault(query, {})[doc] = gain
    return Collection(name, documents, query_map, judgments)


# ------------------------------------------------------------------------------ measures


def ndcg_at(ranked: Sequence[str], gains: Mapping[str, float], k: int = 10) -> float:
    dcg = sum(gains.get(doc, 0.0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted(gains.values(), reverse=True)[:k]
    best = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / best if best > 0 else 0.0


def recall_at(ranked: Sequence[str], relevant: Iterable[str], k: int = 100) -> float:
    wanted = set(relevant)
    if not wanted:
        return 0.0
    return len(wanted.intersection(ranked[:k])) / len(wanted)


def mrr_at(ranked: Sequence[str], relevant: Iterable[str], k: int = 10) -> float:
    wanted = set(relevant)
    for i, doc in enumerate(ranked[:k]):
        if doc in wanted:
            return 1.0 / (i + 1)
    return 0.0


@dataclass(frozen=True, slots=True)
class Scores:
    queries: int
    ndcg_10: float
    recall_100: float
    mrr_10: float

    def to_json(self) -> dict[str, float | int]:
        return {
            "queries": self.queries,
            "ndcg@10": round(self.ndcg_10, 4),
            "recall@100": round(self.recall_100, 4),
            "mrr@10": round(self.mrr_10, 4),
        }


def score(collection: Collection, rankings: Mapping[str, Sequence[str]]) -> Scores:
    """The mean measures over the judged queries; a query without a ranking counts as 0."""
    judged = collection.judged_queries()
    if not judged:
        raise CollectionError(f"{collection.name} has no judged query")
    n = len(judged)
    ndcg = recall = mrr = 0.0
    for query in judged:
        ranked = rankings.get(query, ())
        gains = collection.judgments[query]
        ndcg += ndcg_at(ranked, gains)
        recall += recall_at(ranked, gains)
        mrr += mrr_at(ranked, gains)
    return Scores(n, ndcg / n, recall / n, mrr / n)


# ------------------------------------------------------------------------------ helpers


def _lines(path: Path) -> list[str]:
    if not path.exists():
        raise CollectionError(f"{path} is missing")
    return [line for line in path.read_text(errors="replace").splitlines() if line.strip()]


def _smart_records(text: str) -> list[dict[str, str]]:
    """``.I id`` records; each ``.X`` line starts field X, which runs to the next one."""
    records: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    name = ""
    for line in text.splitlines():
        marker = re.match(r"^\.([A-Z])\b ?(.*)$", line)
        if marker:
            name, rest = marker.group(1), marker.group(2)
            if name == "I":
                current = {"I": rest}
                records.append(current)
                continue
            if current is not None:
                current[name] = rest
            continue
        if current is not None and name:
            current[name] = current.get(name, "") + "\n" + line
    return records


def _flat(text: str) -> str:
    return " ".join(text.split())


def _first(names: set[str], exact: tuple[str, ...], pattern: str) -> str | None:
    for name in exact:
        if name in names:
            return name
    for name in sorted(names):
        if re.search(pattern, name) and not name.endswith(".readme"):
            return name
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
