"""Experiment assignment: which variant a unit (a user, a session, a custom key) sees.

A pure function of the experiment's salt and the unit, so that every replica, the SDKs and an
offline analysis agree without asking anyone::

    bucket(salt, unit) = first 8 bytes of SHA-256(UTF-8(salt + ":" + unit)), big-endian,
                         modulo 10,000

Variants own consecutive ranges of the 10,000 buckets in the order they are listed, each as
wide as its weight in percent times 100 (weights have at most two decimals and sum to 100).
A mutual-exclusion layer is the same function with ``"layer:" + name`` as the salt: an
experiment in a layer takes the units whose layer bucket falls in its ``[start, end)`` range.

``contracts/experiment_assignment_vectors.json`` holds cases every implementation must pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

#: The bucket space: weights resolve to 0.01 %.
BUCKETS = 10_000


def bucket(salt: str, unit: str) -> int:
    digest = hashlib.sha256(f"{salt}:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def layer_bucket(layer: str, unit: str) -> int:
    return bucket(f"layer:{layer}", unit)


def boundaries(weights: Sequence[float]) -> list[int]:
    """The exclusive upper bucket of each variant (the last is ``BUCKETS``)."""
    ends: list[int] = []
    total = 0
    for weight in weights:
        total += round(weight * 100)
        ends.append(total)
    return ends


def choose(salt: str, unit: str, weights: Sequence[float]) -> int:
    """The index of the variant ``unit`` sees, for ``weights`` in percent summing to 100."""
    at = bucket(salt, unit)
    for index, end in enumerate(boundaries(weights)):
        if at < end:
            return index
    raise ValueError(f"weights {list(weights)} do not cover the {BUCKETS} buckets")
