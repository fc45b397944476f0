"""Reciprocal rank fusion: ranks only, the constant, deterministic ties."""

from __future__ import annotations

import pytest

from modelport.retrieval.fusion import reciprocal_rank_fusion


def test_an_item_both_retrievers_rank_beats_one_only_a_single_retriever_ranks_first() -> None:
    fused = reciprocal_rank_fusion({"semantic": ["a", "b"], "lexical": ["c", "b"]}, k=60)

    assert [f.key for f in fused] == ["b", "a", "c"]
    assert fused[0].ranks == {"semantic": 2, "lexical": 2}
    assert fused[0].score == pytest.approx(2 / 62)


def test_a_small_constant_lets_a_first_place_win_over_agreement() -> None:
    rankings = {"semantic": ["a", "x1", "x2", "x3", "b"], "lexical": ["y1", "y2", "y3", "b"]}

    assert reciprocal_rank_fusion(rankings, k=1)[0].key == "a"
    assert reciprocal_rank_fusion(rankings, k=60)[0].key == "b"


def test_ties_are_broken_by_best_rank_then_key() -> None:
    fused = reciprocal_rank_fusion({"semantic": ["b", "a"], "lexical": ["a", "b"]}, k=60)
    assert [f.key for f in fused] == ["a", "b"]


def test_a_repeated_key_counts_once_and_the_constant_must_be_positive() -> None:
    assert reciprocal_rank_fusion({"lexical": ["a", "a"]}, k=60)[0].ranks == {"lexical": 1}
    with pytest.raises(ValueError, match="positive"):
        reciprocal_rank_fusion({"lexical": ["a"]}, k=0)
