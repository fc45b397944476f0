"""What a search user sees of the vector index: filtered results, deletes, upserts, snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.errors import ArtifactError, InvalidInput
from modelport.stores.search_filter import Facets, SearchFilter
from modelport.stores.search_indexes import SearchIndexes
from modelport.stores.vectors import VectorIndex, VectorParams

DIM = 32


def clustered(n: int, seed: int = 1) -> np.ndarray:
    """Unit vectors around 20 centres: neighbours are close, like text embeddings."""
    centres = np.random.default_rng(0).standard_normal((20, DIM))
    rng = np.random.default_rng(seed)
    points = centres[rng.integers(0, 20, n)] + 0.4 * rng.standard_normal((n, DIM))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def catalog(n: int, rare_every: int = 100) -> tuple[list[str], np.ndarray, list[Facets]]:
    """``n`` products; one in ``rare_every`` is a 'Lamps' product (1 % of the catalog)."""
    keys = [f"p{i}" for i in range(n)]
    facets = [
        Facets(
            category=("Home", "Lamps") if i % rare_every == 0 else ("Home", "Kitchen"),
            brand="Lumen" if i % 2 else "Oakhurst",
            price=1000 + i,
            availability="in_stock" if i % 10 else "out_of_stock",
            attributes={"color": "red" if i % 3 == 0 else "blue", "sizes": ["S", "M"]},
        )
        for i in range(n)
    ]
    return keys, clustered(n), facets


def exact(vectors: np.ndarray, query: np.ndarray, allowed: list[int], k: int) -> list[str]:
    scores = vectors[allowed] @ (query / np.linalg.norm(query))
    return [f"p{allowed[i]}" for i in np.argsort(-scores)[:k]]


@pytest.fixture(scope="module")
def big() -> tuple[VectorIndex, np.ndarray]:
    keys, vectors, facets = catalog(10_000)
    # No exact search up front: the 1 % filter is answered by the filtered graph walk.
    index = VectorIndex("shop", DIM, VectorParams(exact_below=0, exact_max=0))
    index.upsert_many(keys, vectors, facets)
    return index, vectors


def test_a_filter_keeping_one_percent_still_returns_k_results(
    big: tuple[VectorIndex, np.ndarray],
) -> None:
    index, _ = big
    lamps = SearchFilter(category=("Home", "Lamps"))
    for query in clustered(20, seed=9):
        hits = index.search(query, 10, lamps)
        assert len(hits) == 10
        assert all(int(h.key[1:]) % 100 == 0 for h in hits)


def test_the_exact_fallback_gives_the_true_nearest_of_a_selective_filter() -> None:
    keys, vectors, facets = catalog(5_000)
    index = VectorIndex("shop", DIM)  # default exact_below: 1 % of 5k is answered exactly
    index.upsert_many(keys, vectors, facets)
    query = clustered(1, seed=3)[0]
    hits = index.search(query, 10, SearchFilter(category=("Home", "Lamps")))
    assert [h.key for h in hits] == exact(vectors, query, list(range(0, 5_000, 100)), 10)
    assert hits[0].score >= hits[-1].score


def test_a_filter_too_selective_for_the_walk_is_answered_exactly() -> None:
    keys, vectors, facets = catalog(10_000)
    # 100 lamps of 10,000 items: the walk would need ef 128 / 1 % / 4 = 3,200 > 1,024.
    index = VectorIndex("shop", DIM, VectorParams(exact_below=0))
    index.upsert_many(keys, vectors, facets)
    query = clustered(1, seed=13)[0]
    hits = index.search(query, 10, SearchFilter(category=("Home", "Lamps")))
    assert [h.key for h in hits] == exact(vectors, query, list(range(0, 10_000, 100)), 10)


def test_fewer_than_k_come_back_only_when_fewer_pass_the_filter(
    big: tuple[VectorIndex, np.ndarray],
) -> None:
    index, _ = big
    few = SearchFilter(min_price=1000, max_price=1004)
    assert {h.key for h in index.search(clustered(1, seed=4)[0], 10, few)} == {
        f"p{i}" for i in range(5)
    }


def test_filter_clauses_combine_as_documented(big: tuple[VectorIndex, np.ndarray]) -> None:
    index, _ = big
    where = SearchFilter(
        category=("Home",),
        brands=("Lumen",),
        availability=("in_stock",),
        attributes=(("color", "red"), ("sizes", "M")),
        max_price=1000 + 5_000,
    )
    hits = index.search(clustered(1, seed=5)[0], 50, where)
    assert len(hits) == 50
    for hit in hits:
        i = int(hit.key[1:])
        assert i % 2 == 1 and i % 10 != 0 and i % 3 == 0 and i <= 5_000
    assert index.search(clustered(1)[0], 5, SearchFilter(category=("Hom",))) == []


def test_an_unfiltered_search_finds_the_true_neighbours() -> None:
    keys, vectors, facets = catalog(5_000)
    index = VectorIndex("shop", DIM)
    index.upsert_many(keys, vectors, facets)
    queries = clustered(50, seed=8)
    found = sum(
        len({h.key for h in index.search(q, 10)} & set(exact(vectors, q, list(range(5_000)), 10)))
        for q in queries
    )
    assert found / 500 >= 0.95


def test_a_removed_product_disappears_and_an_upsert_replaces() -> None:
    keys, vectors, facets = catalog(2_000)
    index = VectorIndex("shop", DIM)
    index.upsert_many(keys, vectors, facets)
    assert index.search(vectors[7], 1)[0].key == "p7"
    assert index.remove("p7")
    assert "p7" not in [h.key for h in index.search(vectors[7], 50)]
    assert not index.remove("p7")
    # p8 moves to where p9 is, and takes a new price: the old vector no longer finds it.
    index.upsert("p8", vectors[9], Facets(price=1))
    near_nine = [h.key for h in index.search(vectors[9], 2)]
    assert set(near_nine) == {"p8", "p9"}
    assert [h.key for h in index.search(vectors[9], 5, SearchFilter(max_price=1))] == ["p8"]
    assert len(index) == 1_999


def test_the_last_write_of_a_key_in_one_batch_wins() -> None:
    vectors = clustered(3)
    index = VectorIndex("shop", DIM)
    index.upsert_many(["a", "b", "a"], vectors, [Facets(price=1), Facets(), Facets(price=3)])
    assert len(index) == 2
    assert index.search(vectors[2], 1)[0].key == "a"
    assert "a" not in [h.key for h in index.search(vectors[0], 3) if h.score > 0.9999]
    assert [h.key for h in index.search(vectors[2], 5, SearchFilter(min_price=3))] == ["a"]


def test_a_facet_only_change_is_seen_by_filters_at_once() -> None:
    keys, vectors, facets = catalog(500)
    index = VectorIndex("shop", DIM)
    index.upsert_many(keys, vectors, facets)
    index.upsert("p3", vectors[3], Facets(availability="discontinued"))
    gone = SearchFilter(availability=("discontinued",))
    assert [h.key for h in index.search(vectors[3], 10, gone)] == ["p3"]
    assert index.stats()["tombstones"] == 0  # the vector did not change: no new slot


def test_stale_versions_are_ignored_so_a_replay_is_harmless() -> None:
    vectors = clustered(3)
    index = VectorIndex("shop", DIM)
    assert index.upsert("a", vectors[0], version=2)
    assert not index.upsert("a", vectors[1], version=1)  # an older message, replayed
    assert index.remove("a", version=3)
    assert not index.upsert("a", vectors[0], version=3)  # the tombstone is newer or equal
    assert index.search(vectors[0], 5) == []
    assert index.upsert("a", vectors[2], version=4)
    assert index.search(vectors[2], 1)[0].key == "a"


def test_a_rebuild_drops_tombstones_and_keeps_answers_right() -> None:
    keys, vectors, facets = catalog(2_000)
    index = VectorIndex("shop", DIM, VectorParams(compact_at=0.25))
    index.upsert_many(keys, vectors, facets)
    assert index.rebuild_due()  # grown from nothing
    index.rebuild()
    assert not index.rebuild_due()
    for i in range(0, 2_000, 2):
        index.remove(f"p{i}")
    assert index.rebuild_due()
    index.rebuild()
    stats = index.stats()
    assert stats["items"] == 1_000 and stats["tombstones"] == 0 and not stats["rebuild_due"]
    query = vectors[11]
    assert index.search(query, 1)[0].key == "p11"
    red = SearchFilter(attributes=(("color", "red"),))
    assert all(int(h.key[1:]) % 6 == 3 for h in index.search(query, 20, red))


def test_writes_made_during_a_rebuild_are_kept() -> None:
    keys, vectors, facets = catalog(1_500)
    extra = clustered(2, seed=12)

    class WritesWhileBuilding(VectorIndex):
        def _build_graph(self, vectors: np.ndarray) -> object:
            # The lock is free while the graph builds: searches and writes go through.
            assert self.search(extra[0], 1)
            self.upsert("late", extra[0], Facets(brand="Late"))
            self.remove("p3")
            self.upsert("p4", extra[1])
            return super()._build_graph(vectors)

    index = WritesWhileBuilding("shop", DIM)
    index.upsert_many(keys, vectors, facets)
    index.rebuild()
    assert index.search(extra[0], 1)[0].key == "late"
    assert [h.key for h in index.search(extra[0], 5, SearchFilter(brands=("Late",)))] == ["late"]
    assert "p3" not in index and index.search(extra[1], 1)[0].key == "p4"
    assert len(index) == 1_500


def test_a_snapshot_restores_identical_results_and_the_stream_position() -> None:
    keys, vectors, facets = catalog(3_000)
    index = VectorIndex("shop", DIM)
    index.upsert_many(keys, vectors, facets, versions=[1] * 3_000)
    index.remove("p1", version=2)
    index.position = "1733400000000-7"
    copy = VectorIndex.restore(index.snapshot(), "shop")
    assert copy.position == "1733400000000-7" and len(copy) == len(index)
    for query in clustered(20, seed=6):
        for where in (
            None,
            SearchFilter(category=("Home", "Lamps")),
            SearchFilter(brands=("Lumen",)),
        ):
            assert copy.search(query, 10, where) == index.search(query, 10, where)
    assert not copy.upsert("p2", vectors[5], version=1)  # versions travel too
    copy.upsert("new", vectors[0])  # and the restored index takes writes
    assert copy.search(vectors[0], 1)[0].key in {"new", "p0"}


def test_a_snapshot_is_refused_by_another_tenant_and_when_corrupted() -> None:
    index = VectorIndex("shop", DIM)
    index.upsert("a", clustered(1)[0])
    data = index.snapshot()
    with pytest.raises(InvalidInput):
        VectorIndex.restore(data, "other-shop")
    with pytest.raises(ArtifactError):
        VectorIndex.restore(data[:-10], "shop")


def test_tenants_never_see_each_others_items() -> None:
    indexes = SearchIndexes(dim=DIM)
    vectors = clustered(2)
    indexes.vectors("acme").upsert("secret", vectors[0], Facets(brand="Acme"))
    indexes.vectors("globex").upsert("public", vectors[1])
    assert [h.key for h in indexes.vectors("globex").search(vectors[0], 10)] == ["public"]
    assert indexes.vectors("globex").search(vectors[0], 10, SearchFilter(brands=("Acme",))) == []
    assert [h.key for h in indexes.vectors("acme").search(vectors[0], 10)] == ["secret"]
    indexes.close()


def test_bad_vectors_are_refused_with_a_reason() -> None:
    index = VectorIndex("shop", DIM)
    with pytest.raises(InvalidInput, match="dimensions"):
        index.upsert("a", np.ones(DIM + 1, dtype=np.float32))
    with pytest.raises(InvalidInput, match="zero vector"):
        index.upsert("a", np.zeros(DIM, dtype=np.float32))
    assert index.search(np.ones(DIM, dtype=np.float32), 10) == []
