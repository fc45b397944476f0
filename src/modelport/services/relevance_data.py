"""Relevance collections read from their usual files: BEIR folders and SMART/TREC collections.

    BEIR:   corpus.jsonl ({"_id", "title", "text"}), queries.jsonl ({"_id", "text"}),
            qrels/test.tsv (query-id, corpus-id, score; a header line)
    SMART:  a documents file (``*.all*``: ``.I id``, ``.T`` title, ``.W`` text, other ``.X``
            fields skipped), a queries file (``*.qry``: ``.I``, ``.W``) and a qrels file
            (``*qrel*``: ``query doc grade`` per line)

SMART qrels number the queries 1, 2, … in file order, whatever their ``.I`` says (Cranfield's
skip values). Graded codes where 1 is best (Cranfield: 1 … 4, -1 not relevant) become gains
``5 - code`` (4 … 1); ``-1`` and anything outside 1 … 4 is not relevant. BEIR scores are gains
as they are.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Collection:
    name: str
    documents: dict[str, tuple[str, str]]
    """id -> (title, text)"""
    queries: dict[str, str]
    judgements: dict[str, dict[str, float]]
    """query id -> document id -> gain (> 0 relevant)"""


def load_collection(path: Path) -> Collection:
    if (path / "corpus.jsonl").exists():
        return _beir(path)
    files = [p for p in path.iterdir() if p.is_file()]
    docs = [p for p in files if ".all" in p.name]
    queries = [p for p in files if p.suffix == ".qry"]
    qrels = [p for p in files if "qrel" in p.name and not p.name.endswith(".readme")]
    if len(docs) == 1 and len(queries) == 1 and len(qrels) == 1:
        return _smart(path.name, docs[0], queries[0], qrels[0])
    raise ValueError(
        f"{path}: neither a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) nor a "
        "SMART collection (one *.all*, one *.qry and one *qrel* file)"
    )


def _beir(path: Path) -> Collection:
    documents: dict[str, tuple[str, str]] = {}
    for line in (path / "corpus.jsonl").read_text().splitlines():
        if line.strip():
            doc = json.loads(line)
            documents[str(doc["_id"])] = (doc.get("title") or "", doc.get("text") or "")
    queries: dict[str, str] = {}
    for line in (path / "queries.jsonl").read_text().splitlines():
        if line.strip():
            query = json.loads(line)
            queries[str(query["_id"])] = query["text"]
    judgements: dict[str, dict[str, float]] = {}
    qrels = path / "qrels" / "test.tsv"
    for i, line in enumerate(qrels.read_text().splitlines()):
        parts = line.split("\t")
        if len(parts) < 3 or (i == 0 and not parts[2].strip().lstrip("-").isdigit()):
            continue  # the header
        judgements.setdefault(parts[0], {})[parts[1]] = float(parts[2])
    return Collection(
        path.name, documents, {q: queries[q] for q in judgements if q in queries}, judgements
    )


_FIELD = re.compile(r"^\.([A-Z])\b\s*(.*)$")


def _records(path: Path) -> list[tuple[str, dict[str, str]]]:
    records: list[tuple[str, dict[str, str]]] = []
    field = None
    for line in path.read_text(errors="replace").splitlines():
        match = _FIELD.match(line)
        if match and match.group(1) == "I":
            records.append((match.group(2).strip(), {}))
            field = None
        elif match:
            field = match.group(1)
            records[-1][1].setdefault(field, "")
            if match.group(2):
                records[-1][1][field] += match.group(2) + " "
        elif field is not None and records:
            records[-1][1][field] += line + " "
    return records


def _smart(name: str, docs: Path, queries: Path, qrels: Path) -> Collection:
    documents = {
        doc_id: (" ".join(f.get("T", "").split()), " ".join(f.get("W", "").split()))
        for doc_id, f in _records(docs)
    }
    # The qrels number queries by their place in the file.
    texts = {
        str(n): " ".join(f.get("W", "").split()) for n, (_, f) in enumerate(_records(queries), 1)
    }
    judgements: dict[str, dict[str, float]] = {}
    for line in qrels.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        code = int(parts[2])
        gain = float(5 - code) if 1 <= code <= 4 else 0.0
        judgements.setdefault(parts[0], {})[parts[1]] = gain
    return Collection(name, documents, texts, judgements)
