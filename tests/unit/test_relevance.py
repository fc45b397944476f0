"""Relevance metrics against hand-computed values, and the collection loaders (the Cranfield
collection in ../shared/datasets is read in place when it is there)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from modelport.retrieval.metrics import mrr_at, ndcg_at, recall_at
from modelport.services.relevance_data import load_collection

CRANFIELD = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "cranfield"


def test_ndcg_of_a_perfect_ranking_is_one_and_of_a_swapped_one_is_less() -> None:
    gains = {"a": 3.0, "b": 1.0}
    assert ndcg_at(["a", "b", "x"], gains, 10) == pytest.approx(1.0)
    swapped = (1 / 1 + 7 / math.log2(3)) / (7 / 1 + 1 / math.log2(3))
    assert ndcg_at(["b", "a"], gains, 10) == pytest.approx(swapped)
    assert ndcg_at(["x"], {}, 10) == 0.0


def test_recall_and_mrr_count_only_relevant_documents_within_the_cutoff() -> None:
    gains = {"a": 1.0, "b": 2.0, "c": 0.0}
    assert recall_at(["c", "a", "x"], gains, 100) == 0.5
    assert recall_at(["a", "b"], gains, 1) == 0.5
    assert mrr_at(["c", "x", "b"], gains, 10) == pytest.approx(1 / 3)
    assert mrr_at(["c", "x", "b"], gains, 2) == 0.0


def test_a_beir_folder_loads_with_its_header_skipped(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "d1", "title": "Wings", "text": "lift"}) + "\n"
    )
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "lift?"}) + "\n")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")

    collection = load_collection(tmp_path)

    assert collection.documents == {"d1": ("Wings", "lift")}
    assert collection.queries == {"q1": "lift?"} and collection.judgements == {"q1": {"d1": 1.0}}


@pytest.mark.skipif(not CRANFIELD.exists(), reason="the shared Cranfield collection is absent")
def test_cranfield_numbers_queries_by_file_order_and_grades_codes() -> None:
    collection = load_collection(CRANFIELD)

    assert len(collection.documents) == 1400 and len(collection.queries) == 225
    assert collection.documents["1"][0].startswith("experimental investigation")
    # The third query in the file is ".I 004"; the qrels call it 3.
    assert collection.queries["3"].startswith("what problems of heat conduction")
    assert collection.judgements["1"]["184"] == 3.0  # code 2
    assert collection.judgements["225"]["1188"] == 0.0  # code -1: not relevant
