"""Features joined into inference: the request signature callers see, the checks at
registration, and the tensors a batch is given."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from modelport.errors import InvalidInput
from modelport.serving.config import FeatureInput, FeaturesConfig
from modelport.serving.features import (
    FeatureJoin,
    check_views,
    referenced_views,
    request_signature,
)
from modelport.serving.signature import Signature, TensorSpec
from modelport.stores.online import (
    FeatureRow,
    FeatureSpec,
    FeatureValue,
    FeatureView,
    ReadResult,
    ViewRead,
    WriteResult,
)

MODEL = Signature(
    (TensorSpec("input", "FP32", (-1, 4)), TensorSpec("context", "FP32", (-1, 2))),
    (TensorSpec("score", "FP32", (-1, 1)),),
)


def view(name: str, entity: str, *features: str, default: float = 0.0) -> FeatureView:
    return FeatureView(
        "acme",
        name,
        1,
        entity,
        tuple(FeatureSpec(f, "float", default) for f in features),
        ttl_s=60.0,
    )


VIEWS = {
    "user_stats": view("user_stats", "user", "clicks", "age", default=-1.0),
    "item_stats": view("item_stats", "item", "price", "rating"),
}


def config(**overrides: object) -> FeaturesConfig:
    raw: dict[str, object] = {
        "entities": {"user": "user_id", "item": "item_id"},
        "inputs": {
            "input": FeatureInput(
                features=[
                    "user_stats:clicks",
                    "item_stats:price",
                    "user_stats:age",
                    "item_stats:rating",
                ]
            )
        },
    }
    raw.update(overrides)
    return FeaturesConfig.model_validate(raw)


class TableStore:
    """An online store holding fixed values (the join's own logic is what is under test)."""

    def __init__(self, values: dict[tuple[str, str], dict[str, float]]) -> None:
        self.values = values
        self.round_trips = 0

    async def write(self, view: FeatureView, rows: Sequence[FeatureRow]) -> WriteResult:
        raise NotImplementedError

    async def read(self, reads: Sequence[ViewRead], now: float | None = None) -> ReadResult:
        return self.read_blocking(reads, now)

    def read_blocking(self, reads: Sequence[ViewRead], now: float | None = None) -> ReadResult:
        self.round_trips += 1
        out: ReadResult = []
        for read in reads:
            per_key = []
            for key in read.keys:
                stored = self.values.get((read.view.name, key), {})
                per_key.append(
                    {
                        f: FeatureValue(stored[f], "present", 1.0)
                        if f in stored
                        else FeatureValue(None, "missing", None)
                        for f in read.features
                    }
                )
            out.append(per_key)
        return out

    async def close(self) -> None:
        return None


def test_callers_send_entity_keys_instead_of_the_feature_filled_input() -> None:
    served = request_signature(MODEL, config())
    assert [(s.name, s.datatype, s.shape) for s in served.inputs] == [
        ("context", "FP32", (-1, 2)),
        ("user_id", "BYTES", (-1,)),
        ("item_id", "BYTES", (-1,)),
    ]
    assert served.outputs == MODEL.outputs
    assert served.batchable


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"inputs": {"nope": FeatureInput(features=["user_stats:age"])}}, "does not have"),
        ({"inputs": {"input": FeatureInput(features=["user_stats:age"])}}, "takes 4 values"),
        ({"entities": {"user": "context"}}, "collides"),
    ],
)
def test_a_config_that_does_not_fit_the_model_is_refused(
    overrides: dict[str, object], words: str
) -> None:
    with pytest.raises(InvalidInput, match=words):
        request_signature(MODEL, config(**overrides))


def test_registration_checks_every_feature_against_its_view() -> None:
    check_views(config(), VIEWS)
    assert referenced_views(config()) == ["user_stats", "item_stats"]
    with pytest.raises(InvalidInput, match="has no feature 'height'"):
        check_views(config(inputs={"input": FeatureInput(features=["user_stats:height"])}), VIEWS)
    with pytest.raises(InvalidInput, match="does not exist"):
        check_views(config(inputs={"input": FeatureInput(features=["ghost:x"])}), VIEWS)
    with pytest.raises(InvalidInput, match="entity 'item'"):
        check_views(config(entities={"user": "user_id"}), VIEWS)
    text = {
        **VIEWS,
        "user_stats": FeatureView(
            "acme", "user_stats", 1, "user", (FeatureSpec("clicks", "string", ""),), 60.0
        ),
    }
    with pytest.raises(InvalidInput, match="needs numbers"):
        check_views(config(inputs={"input": FeatureInput(features=["user_stats:clicks"])}), text)


def test_a_batch_gets_its_tensor_in_the_configured_order_from_one_round_trip() -> None:
    store = TableStore(
        {
            ("user_stats", "u1"): {"clicks": 3.0, "age": 30.0},
            ("user_stats", "u2"): {"clicks": 5.0},  # age missing: the view's default (-1)
            ("item_stats", "i1"): {"price": 9.5, "rating": 4.0},
        }
    )
    join = FeatureJoin(config(), VIEWS, store)
    arrays = {
        "context": np.zeros((3, 2), dtype=np.float32),
        "user_id": np.array([b"u1", b"u2", b"u9"], dtype=object),
        "item_id": np.array([b"i1", b"i1", b"i1"], dtype=object),
    }
    inputs, missing = join.fetch_blocking(arrays)
    assert store.round_trips == 1
    assert set(inputs) == {"context", "input"}
    np.testing.assert_array_equal(
        inputs["input"],
        np.array(
            [[3.0, 9.5, 30.0, 4.0], [5.0, 9.5, -1.0, 4.0], [-1.0, 9.5, -1.0, 4.0]],
            dtype=np.float32,
        ),
    )
    assert missing.tolist() == [0, 1, 2]
