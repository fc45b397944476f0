"""Relevance collections load from the formats users have (BEIR, SMART/TREC) and the measures
``modelport search eval`` prints are the textbook ones."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from modelport.services.relevance import (
    CollectionError,
    load_collection,
    mrr_at,
    ndcg_at,
    recall_at,
    score,
)


def _smart(folder: Path) -> Path:
    folder.mkdir()
    (folder / "mini.all.3").write_text(
        ".I 1\n.T\nwing flutter\n.A\nsomeone\n.W\nwing flutter at\nhigh speed\n"
        ".I 2\n.T\nboundary layers\n.W\nlaminar flow\n"
        ".I 7\n.T\nheat transfer\n.W\nhypersonic heating\n"
    )
    # .I numbers skip values; judgments number the queries 1..n in file order.
    (folder / "mini.qry").write_text(".I 001\n.W\nflutter of wings\n.I 005\n.W\nheating\n")
    (folder / "qrels").write_text("1 1 1\n1 2 4\n1 7 -1\n2 7 2\n")
    return folder


def test_a_smart_collection_loads_with_queries_numbered_in_file_order(tmp_path: Path) -> None:
    c = load_collection(_smart(tmp_path / "mini"))
    assert [d.id for d in c.documents] == ["1", "2", "7"]
    assert c.documents[0].title == "wing flutter"
    assert c.documents[0].text == "wing flutter at high speed"
    assert c.queries == {"1": "flutter of wings", "2": "heating"}
    # Grade 1 (complete answer) is gain 4, grade 4 gain 1, -1 is not relevant.
    assert c.judgments == {"1": {"1": 4.0, "2": 1.0}, "2": {"7": 3.0}}


def test_a_beir_collection_loads_its_split(tmp_path: Path) -> None:
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "\n".join(
            json.dumps(d)
            for d in [
                {"_id": "d1", "title": "Sofa", "text": "grey three-seater"},
                {"_id": "d2", "title": "Lamp", "text": "desk lamp"},
            ]
        )
    )
    (folder / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "couch"}) + "\n" + json.dumps({"_id": "q2", "text": "x"})
    )
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n")
    c = load_collection(folder)
    assert [d.id for d in c.documents] == ["d1", "d2"]
    assert c.queries == {"q1": "couch"}  # only the split's judged queries
    assert c.judgments == {"q1": {"d1": 1.0}}


def test_a_folder_in_no_known_format_says_what_it_expected(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CollectionError, match="neither a BEIR collection"):
        load_collection(tmp_path)


def test_ndcg_rewards_the_ideal_order_and_discounts_by_log_rank() -> None:
    gains = {"a": 3.0, "b": 1.0}
    assert ndcg_at(["a", "b", "c"], gains) == pytest.approx(1.0)
    swapped = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))
    assert ndcg_at(["b", "a"], gains) == pytest.approx(swapped)
    assert ndcg_at(["x"] * 10 + ["a"], gains) == 0.0  # beyond the cut-off


def test_recall_and_mrr() -> None:
    assert recall_at(["a", "x", "b"], {"a", "b", "c", "d"}, k=2) == 0.25
    assert mrr_at(["x", "y", "a"], {"a"}) == pytest.approx(1 / 3)
    assert mrr_at(["x"] * 10 + ["a"], {"a"}) == 0.0


def test_scores_average_over_judged_queries_and_count_a_missing_ranking_as_zero(
    tmp_path: Path,
) -> None:
    c = load_collection(_smart(tmp_path / "mini"))
    scores = score(c, {"1": ["1", "2"]})
    assert scores.queries == 2
    assert scores.ndcg_10 == pytest.approx(0.5)
    assert scores.recall_100 == pytest.approx(0.5)
    assert scores.mrr_10 == pytest.approx(0.5)
