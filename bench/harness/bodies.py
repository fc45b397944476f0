"""Request bodies of the demo models as OIP v2 JSON, and the files wrk reads them from."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

# ~20-word English sentences for minilm (each request carries one).
SENTENCES = [
    "The small bakery on the corner opens at six every morning and sells out of bread by noon.",
    "Our team shipped the new search feature last week after three months of careful testing "
    "with users.",
    "Heavy rain is expected across the northern coast tonight, so drivers should allow extra "
    "time tomorrow.",
    "She learned to play the violin as a child and still practises for an hour every evening.",
    "The museum will reopen its modern art wing in spring after a long and expensive "
    "renovation project.",
    "Customers who ordered before Friday will receive their packages by Tuesday at the latest, "
    "the company said.",
    "A quiet train ride through the mountains is one of the best ways to see the country in "
    "autumn.",
    "The new policy lets employees work from home two days a week if their managers agree to it.",
    "Scientists found that the river's water quality improved sharply once the old factory "
    "finally closed down.",
    "He forgot his umbrella at the office again and walked home through the cold evening rain.",
    "The recipe calls for two cups of flour, one egg, a pinch of salt and warm milk.",
    "Local farmers expect a smaller harvest this year because the summer was unusually hot "
    "and dry.",
    "Please restart the application after installing the update so that the changes can take "
    "effect properly.",
    "The children built a large sandcastle near the water and watched the tide slowly wash "
    "it away.",
    "Ticket prices for the final match rose sharply after both teams won their semi-final "
    "games easily.",
    "The library extended its opening hours during exam season so students have more quiet "
    "space to study.",
]


def ranker_body(seed: int = 0) -> bytes:
    """One row of 64 FP32 values for ``ranker`` (input ``input`` [1,64])."""
    rng = np.random.default_rng(seed)
    row = [round(float(x), 6) for x in rng.standard_normal(64)]
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}
    return json.dumps(body, separators=(",", ":")).encode()


def minilm_bodies() -> list[bytes]:
    """One sentence per body for ``minilm`` (input ``text`` BYTES [1]), one per sentence."""
    return [
        json.dumps(
            {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [s]}]},
            separators=(",", ":"),
        ).encode()
        for s in SENTENCES
    ]


def write_bodies(path: Path, bodies: Iterable[bytes]) -> Path:
    """``bodies`` one per line, as the wrk scripts read them; returns ``path``."""
    path.write_bytes(b"\n".join(bodies) + b"\n")
    return path
