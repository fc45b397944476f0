"""What a search user sees of the lexical index: weights, filters, upserts, deletes, snapshots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.errors import InvalidInput
from modelport.stores.lexical import LexicalIndex
from modelport.stores.search_filter import Facets, SearchFilter
from modelport.stores.search_indexes import SearchIndexes


@pytest.fixture
def index() -> Iterator[LexicalIndex]:
    made = LexicalIndex("shop", {"title": 2.0, "brand": 1.5, "description": 1.0})
    yield made
    made.close()


def add_catalog(index: LexicalIndex, n: int) -> None:
    for i in range(n):
        lamp = i % 100 == 0
        index.upsert(
            f"p{i}",
            {
                "title": f"{'Desk Lamp' if lamp else 'Oak Table'} model {i}",
                "description": "A sturdy piece for the home office, lamp friendly",
            },
            Facets(
                category=("Home", "Lighting") if lamp else ("Home", "Furniture"),
                brand="Lumen" if i % 2 else "Oakhurst",
                price=1000 + i,
                availability="in_stock" if i % 10 else "out_of_stock",
                attributes={"color": "red" if i % 3 == 0 else "blue"},
            ),
        )
    index.commit()


def test_a_filter_keeping_one_percent_still_returns_k_results(index: LexicalIndex) -> None:
    add_catalog(index, 2_000)
    # "home office" matches every product; the filter leaves the 20 lighting ones.
    hits = index.search("home office", 10, SearchFilter(category=("Home", "Lighting")))
    assert len(hits) == 10
    assert all(int(h.key[1:]) % 100 == 0 for h in hits)


def test_field_weights_decide_which_field_wins(index: LexicalIndex) -> None:
    index.upsert("in-title", {"title": "Walnut lamp", "description": "A light for reading"})
    index.upsert("in-description", {"title": "Reading light", "description": "Walnut lamp base"})
    index.commit()
    # Title weighs 2, description 1 (the defaults of this index): the title match ranks first.
    assert [h.key for h in index.search("walnut lamp")] == ["in-title", "in-description"]
    flipped = index.search("walnut lamp", weights={"title": 1.0, "description": 3.0})
    assert [h.key for h in flipped] == ["in-description", "in-title"]
    only_titles = index.search("walnut", weights={"title": 1.0, "description": 0.0})
    assert [h.key for h in only_titles] == ["in-title"]


def test_words_match_by_stem_and_query_syntax_is_just_text(index: LexicalIndex) -> None:
    index.upsert("boots", {"title": "Hiking Boots", "brand": "Alder & Co"})
    index.commit()
    assert [h.key for h in index.search("hiked boot")] == ["boots"]
    assert [h.key for h in index.search('Alder & Co (AND) "title:')] == ["boots"]
    assert index.search("   ") == [] and index.search("&&") == []


def test_an_upsert_replaces_and_a_removal_disappears_after_commit(index: LexicalIndex) -> None:
    index.upsert("p1", {"title": "Green kettle"})
    index.upsert("p2", {"title": "Green teapot"})
    index.commit()
    index.upsert("p1", {"title": "Copper kettle"})
    index.remove("p2")
    assert {h.key for h in index.search("green")} == {"p1", "p2"}  # not yet committed
    index.commit()
    assert index.search("green") == []
    assert [h.key for h in index.search("copper kettle")] == ["p1"]
    assert len(index) == 1 and "p2" not in index


def test_filter_clauses_combine_and_do_not_change_scores(index: LexicalIndex) -> None:
    add_catalog(index, 600)
    where = SearchFilter(
        brands=("Lumen",),
        availability=("in_stock",),
        attributes=(("color", "red"),),
        min_price=1100,
        max_price=1400,
    )
    hits = index.search("oak table", 100, where)
    assert hits
    for hit in hits:
        i = int(hit.key[1:])
        assert i % 2 == 1 and i % 10 != 0 and i % 3 == 0 and 100 <= i <= 400
    unfiltered = {h.key: h.score for h in index.search("oak table", 600)}
    assert all(abs(unfiltered[h.key] - h.score) < 1e-5 for h in hits)


def test_stale_versions_are_ignored(index: LexicalIndex) -> None:
    assert index.upsert("a", {"title": "new title"}, version=5)
    assert not index.upsert("a", {"title": "old title"}, version=4)
    index.commit()
    assert index.search("old") == [] and [h.key for h in index.search("new")] == ["a"]


def test_a_snapshot_restores_identical_results_and_the_position(
    index: LexicalIndex, tmp_path: Path
) -> None:
    add_catalog(index, 500)
    index.remove("p5", version=1)
    index.position = "42-0"
    copy = LexicalIndex.restore(index.snapshot(), "shop", tmp_path / "restored")
    try:
        assert copy.position == "42-0" and len(copy) == len(index)
        for text, where in (
            ("oak table", None),
            ("desk lamp", SearchFilter(brands=("Oakhurst",))),
            ("home office", SearchFilter(category=("Home", "Lighting"))),
        ):
            assert copy.search(text, 10, where) == index.search(text, 10, where)
        copy.upsert("p9999", {"title": "Oak table deluxe"})  # the restored index takes writes
        copy.commit()
        assert "p9999" in {h.key for h in copy.search("deluxe")}
        with pytest.raises(InvalidInput):
            LexicalIndex.restore(index.snapshot(), "another-tenant", tmp_path / "other")
    finally:
        copy.close()


def test_tenants_never_see_each_others_items(tmp_path: Path) -> None:
    indexes = SearchIndexes(dim=4, folder=tmp_path)
    try:
        indexes.lexical("acme").upsert("secret", {"title": "Rocket skates"}, Facets(brand="Acme"))
        indexes.lexical("acme").commit()
        indexes.lexical("globex").upsert("public", {"title": "Skates"})
        indexes.lexical("globex").commit()
        assert [h.key for h in indexes.lexical("globex").search("rocket skates")] == ["public"]
        assert indexes.lexical("globex").search("skates", 10, SearchFilter(brands=("Acme",))) == []
        restored = indexes.lexical("acme").snapshot()
        indexes.restore("acme", None, restored)
        assert [h.key for h in indexes.lexical("acme").search("skates")] == ["secret"]
        with pytest.raises(InvalidInput):
            indexes.restore("globex", None, restored)
        custom = indexes.lexical("initech", fields={"name": 1.0})
        custom.upsert("stapler", {"name": "Red stapler"})
        custom.commit()
        assert [h.key for h in custom.search("stapler")] == ["stapler"]
    finally:
        indexes.close()
    assert not any(tmp_path.iterdir())  # closing removes the index folders


def test_unknown_fields_are_refused(index: LexicalIndex) -> None:
    with pytest.raises(InvalidInput, match="no text field"):
        index.upsert("a", {"colour": "red"})
    with pytest.raises(InvalidInput, match="no text field"):
        index.search("red", weights={"colour": 1.0})
