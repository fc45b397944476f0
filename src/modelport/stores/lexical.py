"""One tenant's lexical index: field-weighted BM25 (tantivy) by product key, filtered in the query.

Why tantivy over bm25s: ``docs/benchmarks/lexical_index.md``. On call: ``docs/search.md``.

- **Fields and weights.** The text fields are fixed when the index is made (``fields``: name ->
  weight); each is analysed with tantivy's ``en_stem`` (lower case, English Snowball stems) and
  scored by BM25 on its own; a document's score is the weighted sum over the fields the query
  matched. Weights are applied at query time, so :meth:`LexicalIndex.search` can take others
  without reindexing.
- **Query text** is words only: punctuation and query syntax are removed, so a shopper's
  ``"Alder & Co (oak)"`` is never read as tantivy query language. Words are OR-ed.
- **Filters** are query clauses that must match and score nothing (``const_score_query(…, 0)``):
  the same :class:`SearchFilter` semantics as the vector index, evaluated by tantivy while it
  collects the top k, so a filter keeping 1 % of the items still yields k when k match.
- **Writes** (upserts replace by key, removals) are buffered; :meth:`LexicalIndex.commit` makes
  them searchable (one tantivy commit + reload, a few ms). The stream consumer commits once per
  batch it applies. Versions guard against replays as in the vector index.
- **Storage.** The index lives in a folder of its own (tantivy's segment files, memory-mapped);
  snapshots carry those files whole.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tantivy

from modelport.errors import InvalidInput
from modelport.stores.index_snapshot import pack, unpack
from modelport.stores.rwlock import RWLock
from modelport.stores.search_filter import Facets, SearchFilter, attribute_terms, term_key

KIND = "lexical"
CATEGORY_SEPARATOR = " > "
DEFAULT_FIELDS: Mapping[str, float] = {"title": 2.0, "brand": 1.5, "description": 1.0}
_WRITER_HEAP = 32_000_000
_NOT_WORDS = re.compile(r"[^\w]+")
_LOCK_FILES = (".tantivy-writer.lock", ".tantivy-meta.lock")


@dataclass(frozen=True, slots=True)
class LexicalHit:
    key: str
    score: float


def query_words(text: str) -> str:
    # Lower case too: tantivy's parser reads upper-case AND / OR / NOT as operators.
    return " ".join(_NOT_WORDS.sub(" ", text).lower().split())


def _schema(fields: Mapping[str, float]) -> Any:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("key", stored=True, tokenizer_name="raw")
    for name in fields:
        if name.startswith("f_") or name == "key" or not builder.is_valid_field_name(name):
            raise InvalidInput(f"{name!r} cannot name a text field of the lexical index")
        builder.add_text_field(name, tokenizer_name="en_stem")
    builder.add_text_field("f_category", tokenizer_name="raw")
    builder.add_text_field("f_brand", tokenizer_name="raw")
    builder.add_text_field("f_availability", tokenizer_name="raw")
    builder.add_text_field("f_attr", tokenizer_name="raw")
    builder.add_integer_field("f_price", indexed=True, fast=True)
    return builder.build()


class LexicalIndex:
    """The texts of one tenant. Thread-safe; call from worker threads (``asyncio.to_thread``)."""

    def __init__(
        self,
        tenant: str,
        fields: Mapping[str, float] = DEFAULT_FIELDS,
        folder: Path | None = None,
    ) -> None:
        """``folder``: the index's own (made if missing, removed by :meth:`close`); temp if None."""
        if not fields:
            raise InvalidInput("a lexical index needs at least one text field")
        self.tenant = tenant
        self.fields = dict(fields)
        self.position: str | None = None
        """The change stream id of the last message applied; the caller sets it."""
        self.folder = folder or Path(tempfile.mkdtemp(prefix="modelport-lexical-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self._schema = _schema(self.fields)
        self._index = tantivy.Index(self._schema, path=str(self.folder))
        self._writer = self._index.writer(_WRITER_HEAP, 1)
        self._lock = RWLock()
        self._keys: set[str] = set()
        self._versions: dict[str, int] = {}
        self._pending = False

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    # --- writes (visible after commit) ------------------------------------------------------

    def upsert(
        self,
        key: str,
        texts: Mapping[str, str],
        facets: Facets | None = None,
        version: int | None = None,
    ) -> bool:
        """Add or replace ``key`` (``texts``: field -> text; unknown fields are an error)."""
        unknown = set(texts) - set(self.fields)
        if unknown:
            raise InvalidInput(f"the lexical index has no text field {sorted(unknown)[0]!r}")
        facets = facets or Facets()
        with self._lock.write():
            if not self._newer(key, version):
                return False
            document = tantivy.Document()
            document.add_text("key", key)
            for name, text in texts.items():
                document.add_text(name, text)
            for depth in range(1, len(facets.category) + 1):
                document.add_text("f_category", CATEGORY_SEPARATOR.join(facets.category[:depth]))
            if facets.brand is not None:
                document.add_text("f_brand", facets.brand)
            document.add_text("f_availability", facets.availability)
            for name, value in attribute_terms(facets.attributes):
                document.add_text("f_attr", term_key(name, value))
            if facets.price is not None:
                document.add_integer("f_price", int(facets.price))
            self._writer.delete_documents_by_term("key", key)
            self._writer.add_document(document)
            self._keys.add(key)
            self._pending = True
            return True

    def remove(self, key: str, version: int | None = None) -> bool:
        with self._lock.write():
            if not self._newer(key, version) or key not in self._keys:
                return False
            self._writer.delete_documents_by_term("key", key)
            self._keys.discard(key)
            self._pending = True
            return True

    def commit(self) -> None:
        """Make every write so far searchable."""
        with self._lock.write():
            self._commit()

    def _commit(self) -> None:
        if self._pending:
            self._writer.commit()
            self._index.reload()
            self._pending = False

    def _newer(self, key: str, version: int | None) -> bool:
        if version is None:
            return True
        if self._versions.get(key, -1) >= version:
            return False
        self._versions[key] = version
        return True

    # --- reads ------------------------------------------------------------------------------

    def search(
        self,
        text: str,
        k: int = 10,
        where: SearchFilter | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> list[LexicalHit]:
        """The ``k`` best BM25 matches of ``text`` passing ``where``, best first."""
        words = query_words(text)
        if k <= 0 or not words:
            return []
        boosts = dict(weights or self.fields)
        unknown = set(boosts) - set(self.fields)
        if unknown:
            raise InvalidInput(f"the lexical index has no text field {sorted(unknown)[0]!r}")
        fields = [name for name, weight in boosts.items() if weight > 0]
        if not fields:
            return []
        query, _ = self._index.parse_query_lenient(words, fields, boosts)
        clauses = [(tantivy.Occur.Must, query)]
        if where is not None and not where.is_empty:
            clauses.append(
                (tantivy.Occur.Must, tantivy.Query.const_score_query(self._filter(where), 0.0))
            )
        with self._lock.read():
            searcher = self._index.searcher()
            found = searcher.search(tantivy.Query.boolean_query(clauses), k).hits
            return [LexicalHit(searcher.doc(a)["key"][0], float(s)) for s, a in found]

    def _filter(self, where: SearchFilter) -> Any:
        schema, must = self._schema, []

        def any_of(field: str, values: list[str]) -> Any:
            terms = [
                (tantivy.Occur.Should, tantivy.Query.term_query(schema, field, v)) for v in values
            ]
            return tantivy.Query.boolean_query(terms)

        if where.category:
            must.append(any_of("f_category", [CATEGORY_SEPARATOR.join(where.category)]))
        if where.brands:
            must.append(any_of("f_brand", list(where.brands)))
        if where.availability:
            must.append(any_of("f_availability", list(where.availability)))
        if where.min_price is not None or where.max_price is not None:
            must.append(
                tantivy.Query.range_query(
                    schema, "f_price", tantivy.FieldType.Integer, where.min_price, where.max_price
                )
            )
        for name, value in where.attributes:
            must.append(any_of("f_attr", [term_key(name, value)]))
        return tantivy.Query.boolean_query([(tantivy.Occur.Must, q) for q in must])

    # --- snapshots --------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Commit, then the segment files, key set, versions and stream position as bytes."""
        with self._lock.write():
            self._pending = True  # commit even when idle: the files then match meta.json
            self._commit()
            self._writer.wait_merging_threads()  # no merge may delete a file while we read it
            try:
                files = {
                    f"file:{p.name}": p.read_bytes()
                    for p in sorted(self.folder.iterdir())
                    if p.is_file() and p.name not in _LOCK_FILES
                }
            finally:
                self._writer = self._index.writer(_WRITER_HEAP, 1)
            header = {
                "kind": KIND,
                "tenant": self.tenant,
                "position": self.position,
                "fields": self.fields,
                "items": len(self._keys),
            }
            sections = {
                "keys": "\n".join(sorted(self._keys)).encode(),
                "versions": "\n".join(f"{k}\t{v}" for k, v in self._versions.items()).encode(),
                **files,
            }
            return pack(header, sections)

    @classmethod
    def restore(cls, data: bytes, tenant: str, folder: Path | None = None) -> LexicalIndex:
        header, sections = unpack(data)
        if header.get("kind") != KIND:
            raise InvalidInput(f"this snapshot holds a {header.get('kind')!r} index, not lexical")
        if header["tenant"] != tenant:
            raise InvalidInput("this snapshot belongs to another tenant")
        target = folder or Path(tempfile.mkdtemp(prefix="modelport-lexical-"))
        target.mkdir(parents=True, exist_ok=True)
        if any(target.iterdir()):
            raise InvalidInput(f"restore needs an empty folder; {target} is not")
        for name, blob in sections.items():
            if name.startswith("file:"):
                filename = name.removeprefix("file:")
                if "/" in filename or "\\" in filename or filename in ("", ".", ".."):
                    raise InvalidInput("an index snapshot names a file outside its folder")
                (target / filename).write_bytes(blob)
        index = cls(tenant, header["fields"], target)
        index.position = header["position"]
        index._keys = set(filter(None, sections["keys"].decode().split("\n")))
        for line in sections["versions"].decode().splitlines():
            key, _, version = line.rpartition("\t")
            index._versions[key] = int(version)
        return index

    def close(self) -> None:
        """Drop the writer and the folder: the index's data lives on in its snapshots."""
        with self._lock.write():
            self._writer.rollback()
            del self._writer
            shutil.rmtree(self.folder, ignore_errors=True)
