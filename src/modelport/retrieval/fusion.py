"""Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009).

Each retriever ranks candidates; a candidate at rank ``r`` (1-based) of a ranking adds
``1 / (k + r)`` to its fused score, summed over the rankings it appears in. Only ranks count,
never the retrievers' raw scores, which live on scales that cannot be compared (cosine
similarity against BM25). ``k`` damps the head of each ranking: with a small ``k`` a first
place dominates, with a large one agreement between retrievers does. 60, the paper's value,
is the default (``MODELPORT_SEARCH_RRF_K``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_K = 60.0


@dataclass(slots=True)
class Fused:
    key: str
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    """The candidate's 1-based rank in each ranking that holds it."""


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[str]], k: float = DEFAULT_K
) -> list[Fused]:
    """Every candidate of ``rankings`` (name -> keys, best first), best fused score first.

    Ties go to the candidate with the better best rank, then to the key, so the order is a
    function of the inputs alone (replicas answer alike)."""
    if k <= 0:
        raise ValueError("the RRF constant must be positive")
    fused: dict[str, Fused] = {}
    for name, keys in rankings.items():
        for rank, key in enumerate(keys, start=1):
            entry = fused.get(key)
            if entry is None:
                entry = fused[key] = Fused(key, 0.0)
            if name in entry.ranks:
                continue  # a ranking that repeats a key counts its best rank only
            entry.ranks[name] = rank
            entry.score += 1.0 / (k + rank)
    return sorted(fused.values(), key=lambda f: (-f.score, min(f.ranks.values()), f.key))
