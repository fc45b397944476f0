"""Relevance metrics of one ranked answer against graded judgements (pure functions).

``gains`` maps a document id to its graded relevance (> 0 relevant; absent or <= 0 not).
nDCG uses the exponential gain ``2**g - 1`` and a log2 discount (Järvelin and Kekäläinen;
the trec_eval / BEIR convention); the ideal ranking is every judged document by gain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def ndcg_at(ranked: Sequence[str], gains: Mapping[str, float], k: int) -> float:
    def dcg(values: Sequence[float]) -> float:
        return float(sum((2.0**g - 1.0) / math.log2(i + 2) for i, g in enumerate(values)))

    ideal = dcg(sorted((g for g in gains.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([max(gains.get(d, 0.0), 0.0) for d in ranked[:k]]) / ideal


def recall_at(ranked: Sequence[str], gains: Mapping[str, float], k: int) -> float:
    relevant = {d for d, g in gains.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at(ranked: Sequence[str], gains: Mapping[str, float], k: int) -> float:
    for i, doc in enumerate(ranked[:k]):
        if gains.get(doc, 0.0) > 0:
            return 1.0 / (i + 1)
    return 0.0
