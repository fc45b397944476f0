"""Response cache keys: equal requests hash equally everywhere, different ones never collide."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from unit_helpers import OIP_DTYPES

from modelport.serving.cache_key import cache_key

PROPERTIES = settings(max_examples=200, deadline=None)
NUMERIC = sorted(name for name in OIP_DTYPES if name != "BYTES")

names = st.text(st.characters(codec="utf-8"), max_size=6)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    datatype = draw(st.sampled_from([*NUMERIC, "BYTES"]))
    shape = draw(shapes)
    if datatype == "BYTES":
        count = int(np.prod(shape))
        items = draw(st.lists(st.binary(max_size=5), min_size=count, max_size=count))
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    return draw(hnp.arrays(OIP_DTYPES[datatype], shape))


requests = st.tuples(
    names,
    names,
    names,
    st.dictionaries(names, tensors(), min_size=1, max_size=3),
    st.binary(max_size=8),
)


def canonical(request: tuple[str, str, str, dict[str, np.ndarray], bytes]) -> Any:
    """What the key must depend on, written out plainly: two requests answer alike exactly
    when these are equal."""
    tenant, model, version, arrays, extra = request
    tensors = []
    for name in sorted(arrays):
        array = arrays[name]
        if array.dtype.kind == "O":
            content: Any = ("BYTES", tuple(array.flat))
        else:
            content = (
                array.dtype.newbyteorder("<").str,
                array.astype(array.dtype.newbyteorder("<")).tobytes(),
            )
        tensors.append((name, array.shape, content))
    return (tenant, model, version, tuple(tensors), extra)


def key_of(request: tuple[str, str, str, dict[str, np.ndarray], bytes]) -> bytes:
    tenant, model, version, arrays, extra = request
    return cache_key(tenant, model, version, arrays, extra)


@PROPERTIES
@given(requests)
def test_the_same_content_in_another_layout_has_the_same_key(
    request: tuple[str, str, str, dict[str, np.ndarray], bytes],
) -> None:
    tenant, model, version, arrays, extra = request
    relaid: dict[str, np.ndarray] = {}
    for name in reversed(list(arrays)):  # another insertion order
        array = arrays[name]
        if array.dtype.kind == "O":
            # str elements stand for their UTF-8 bytes, like the codec decodes them.
            relaid[name] = array.copy()
        else:
            swapped = np.array(array, dtype=array.dtype.newbyteorder(">"), order="F")
            relaid[name] = np.stack([swapped, swapped], axis=-1)[..., 1]  # a strided view
    assert cache_key(tenant, model, version, relaid, extra) == key_of(request)
    assert len(key_of(request)) == 20


@PROPERTIES
@given(requests, requests)
def test_different_requests_never_share_a_key(
    a: tuple[str, str, str, dict[str, np.ndarray], bytes],
    b: tuple[str, str, str, dict[str, np.ndarray], bytes],
) -> None:
    assert (key_of(a) == key_of(b)) == (canonical(a) == canonical(b))


@PROPERTIES
@given(requests, st.sampled_from(["tenant", "model", "version", "extra", "name", "shape"]))
def test_changing_any_part_changes_the_key(
    request: tuple[str, str, str, dict[str, np.ndarray], bytes], part: str
) -> None:
    tenant, model, version, arrays, extra = request
    name = sorted(arrays)[0]
    if part == "tenant":
        tenant += "x"
    elif part == "model":
        model += "x"
    elif part == "version":
        version += "x"
    elif part == "extra":
        extra += b"\x00"
    elif part == "name":
        arrays = {**arrays, name + "x": arrays[name]}
        del arrays[name]
        if name + "x" in request[3]:
            return
    else:
        arrays = {**arrays, name: arrays[name].reshape(*arrays[name].shape, 1)}
    assert cache_key(tenant, model, version, arrays, extra) != key_of(request)


def test_boundaries_between_parts_are_unambiguous() -> None:
    x = {"x": np.zeros(2, np.float32)}
    assert cache_key("ab", "c", "1", x) != cache_key("a", "bc", "1", x)
    assert cache_key("t", "m", "12", x) != cache_key("t", "m1", "2", x)
    split = np.array([b"ab", b"c"], dtype=object)
    joined = np.array([b"a", b"bc"], dtype=object)
    assert cache_key("t", "m", "1", {"s": split}) != cache_key("t", "m", "1", {"s": joined})
    # The same bytes read as another datatype or shape are another request.
    raw = np.arange(6, dtype=np.int32)
    assert cache_key("t", "m", "1", {"x": raw}) != cache_key(
        "t", "m", "1", {"x": raw.view(np.float32)}
    )
    assert cache_key("t", "m", "1", {"x": raw.reshape(2, 3)}) != cache_key(
        "t", "m", "1", {"x": raw.reshape(3, 2)}
    )
    # Inputs never run into the extra bytes.
    assert cache_key("t", "m", "1", {"s": np.array([b"ab"], object)}, b"c") != cache_key(
        "t", "m", "1", {"s": np.array([b"a"], object)}, b"bc"
    )


def test_text_elements_hash_as_their_utf8_bytes() -> None:
    text = np.array(["café", "x"], dtype=object)
    raw = np.array(["café".encode(), b"x"], dtype=object)
    assert cache_key("t", "m", "1", {"s": text}) == cache_key("t", "m", "1", {"s": raw})


GOLDEN_SCRIPT = """
import numpy as np
from modelport.serving.cache_key import cache_key
arrays = {
    "input": np.arange(64, dtype=np.float32).reshape(1, 64) / 7,
    "ids": np.array([b"user-1", b"item-\\xff"], dtype=object),
}
print(cache_key("acme", "ranker", "3", arrays, b"features").hex())
"""
#: The key of the request above. It must never change by accident: replicas of different
#: builds share the Redis tier. Change it only together with ``_PERSON`` in ``serving.cache_key``.
GOLDEN = "5f258c5bb372e35e9323374844f0437d8481fcda"


def test_keys_are_the_same_in_every_process() -> None:
    keys = set()
    for seed in ("0", "1", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", GOLDEN_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        keys.add(result.stdout.strip())
    assert keys == {GOLDEN}
