"""Features joined into inference: the request signature callers see, the checks at
registration, and the tensors a batch is given."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from modelport.errors import InvalidInput
from modelport.serving.batcher import Batcher, Joined
from modelport.serving.compute import ComputeThreads
from modelport.serving.config import BatchingConfig, FeatureInput, FeaturesConfig
from modelport.serving.features import (
    FeatureJoin,
    FeatureJoinRuntime,
    check_views,
    referenced_views,
    request_signature,
)
from modelport.serving.signature import Signature, TensorSpec
from modelport.stores.online import FeatureRow, FeatureSpec, FeatureView
from modelport.stores.online_memory import MemoryOnlineStore
from modelport.stores.sql import create_engine, migrate

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


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[MemoryOnlineStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'features.db'}"
    await migrate(url)
    engine = create_engine(url)
    online = MemoryOnlineStore(engine)
    await online.load()
    now = time.time()
    await online.write(
        VIEWS["user_stats"],
        [
            FeatureRow("u1", {"clicks": 3.0, "age": 30.0}, now),
            FeatureRow("u2", {"clicks": 5.0}, now),  # age missing: the view's default (-1)
            FeatureRow("u3", {"clicks": 7.0, "age": 40.0}, now - 3600),  # older than the TTL
        ],
    )
    await online.write(VIEWS["item_stats"], [FeatureRow("i1", {"price": 9.5, "rating": 4.0}, now)])
    yield online
    await online.close()
    await engine.dispose()


def arrays_for(users: list[bytes]) -> dict[str, np.ndarray]:
    return {
        "context": np.zeros((len(users), 2), dtype=np.float32),
        "user_id": np.array(users, dtype=object),
        "item_id": np.array([b"i1"] * len(users), dtype=object),
    }


WANT = np.array(
    [
        [3.0, 9.5, 30.0, 4.0],
        [5.0, 9.5, -1.0, 4.0],
        [-1.0, 9.5, -1.0, 4.0],
        [-1.0, 9.5, -1.0, 4.0],
    ],
    dtype=np.float32,
)


async def test_a_batch_gets_its_tensor_in_the_configured_order(store: MemoryOnlineStore) -> None:
    join = FeatureJoin(config(), VIEWS, store)
    users = [b"u1", b"u2", b"u9", b"u3"]
    inputs, missing = await asyncio.to_thread(join.fetch_blocking, arrays_for(users))
    assert set(inputs) == {"context", "input"}
    np.testing.assert_array_equal(inputs["input"], WANT)
    # u2 lacks one value; u9 is unknown; u3's record is past its view's TTL.
    assert missing.tolist() == [0, 1, 2, 2]
    on_loop, missing_on_loop = await join.fetch(arrays_for(users))
    np.testing.assert_array_equal(on_loop["input"], WANT)
    assert missing_on_loop.tolist() == missing.tolist()


class Scorer:
    """A tiny model for ``MODEL``: the score is the sum of a row's inputs."""

    signature = MODEL

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        total = inputs["input"].sum(axis=1) + inputs["context"].sum(axis=1)
        return {"score": total.reshape(-1, 1)}

    def close(self) -> None:
        pass


async def test_a_joined_batch_hands_each_request_its_missing_counts_beside_real_outputs(
    store: MemoryOnlineStore, threads: ComputeThreads
) -> None:
    runtime = FeatureJoinRuntime(
        Scorer(), FeatureJoin(config(), VIEWS, store), request_signature(MODEL, config()), "r:1"
    )
    batcher = Batcher(
        runtime.answer,
        BatchingConfig(max_batch_size=8, max_queue_delay_ms=1000, flush_when_idle=True),
        threads,
        label="r:1",
    )
    batcher.start()
    try:
        first = batcher.enqueue(arrays_for([b"u1", b"u2"]), 2)
        second = batcher.enqueue(arrays_for([b"u9", b"u3"]), 2)
        answers = [await first, await second]
    finally:
        await batcher.close(drain_timeout=5)
    assert all(isinstance(a, Joined) for a in answers)
    joined = cast(list[Joined], answers)
    assert [a.missing.tolist() for a in joined] == [[0, 1], [2, 2]]
    for answer, want in zip(joined, (WANT[:2], WANT[2:]), strict=True):
        # Only the model's outputs and the joined tensor: no counts posing as a tensor.
        assert set(answer.outputs) == {"score", "features:input"}
        np.testing.assert_array_equal(answer.outputs["features:input"], want)
        np.testing.assert_array_equal(answer.outputs["score"][:, 0], want.sum(axis=1))


async def test_a_prefetched_request_is_answered_with_outputs_alone(
    store: MemoryOnlineStore,
) -> None:
    runtime = FeatureJoinRuntime(
        Scorer(), FeatureJoin(config(), VIEWS, store), request_signature(MODEL, config()), "r:1"
    )
    model_inputs, missing, identity = await runtime.prefetch(arrays_for([b"u1", b"u9"]))
    assert set(model_inputs) == {"context", "input"}
    assert missing.tolist() == [0, 2]
    assert identity.endswith(missing.tobytes())
    answer = await asyncio.to_thread(runtime.answer, model_inputs)
    assert not isinstance(answer, Joined)
    assert set(answer) == {"score", "features:input"}
    np.testing.assert_array_equal(answer["features:input"], WANT[[0, 2]])
