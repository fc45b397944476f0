"""NVIDIA's ``tritonclient.http`` talks to a live modelport server, in JSON and binary mode."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from .conftest import Server

httpclient = pytest.importorskip("tritonclient.http")
triton_utils = pytest.importorskip("tritonclient.utils")

pytestmark = pytest.mark.integration


class AuthedTriton:
    """A tritonclient that sends the tenant's key on every call, as its users do."""

    def __init__(self, client: Any, headers: dict[str, str]) -> None:
        self._client = client
        self._headers = headers

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if name.startswith(("is_", "get_", "infer", "load_", "unload_")):
            return functools.partial(method, headers=self._headers)
        return method


@pytest.fixture
def triton(main_server: Server) -> Iterator[Any]:
    client = httpclient.InferenceServerClient(url=main_server.host_port, network_timeout=30.0)
    try:
        yield AuthedTriton(client, main_server.auth_header)
    finally:
        client.close()


@pytest.fixture(scope="module")
def ranker_session(main_server: Server) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(main_server.models["ranker"]), providers=["CPUExecutionProvider"]
    )


def test_health_and_metadata(triton: Any) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("ranker")
    assert triton.is_model_ready("ranker", "1")
    assert not triton.is_model_ready("broken_optional")
    server = triton.get_server_metadata()
    assert server["name"] == "modelport"
    assert "binary_tensor_data" in server["extensions"]
    meta = triton.get_model_metadata("ranker")
    assert meta["name"] == "ranker"
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [{"name": "score", "datatype": "FP32", "shape": [-1, 1]}]
    assert triton.get_model_metadata("versioned", "1")["versions"] == ["1"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_ranker(triton: Any, ranker_session: ort.InferenceSession, binary: bool) -> None:
    x = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("score", binary_data=binary)
    result = triton.infer("ranker", [inp], outputs=[out], request_id=f"triton-{binary}")
    score = result.as_numpy("score")
    assert score.dtype == np.float32 and score.shape == (5, 1)
    (expected,) = ranker_session.run(["score"], {"input": x})
    np.testing.assert_allclose(score, expected, rtol=1e-5, atol=1e-7)
    response = result.get_response()
    assert response["model_name"] == "ranker"
    assert response["model_version"] == "1"
    assert response["id"] == f"triton-{binary}"
    assert ("data" in response["outputs"][0]) is not binary


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_pinned_version_and_default_outputs(triton: Any, binary: bool) -> None:
    x = np.array([[1.0, -2.0, 0.5, 4.0]], dtype=np.float32)
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = triton.infer("versioned", [inp], model_version="2")
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)
    assert result.get_response()["model_version"] == "2"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_bytes_and_embeddings(triton: Any, binary: bool) -> None:
    texts = np.array([b"A man is playing a guitar.", "Ünïcode text ✓".encode()], dtype=object)
    inp = httpclient.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(texts, binary_data=binary)
    out = httpclient.InferRequestedOutput("embedding", binary_data=binary)
    embedding = triton.infer("minilm", [inp], outputs=[out]).as_numpy("embedding")
    assert embedding.shape == (2, 384) and embedding.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(
    ("model", "array"),
    [
        ("id_bool", np.array([[True, False, True]])),
        ("id_uint64", np.array([[0, 2**64 - 1, 7]], dtype=np.uint64)),
        ("id_int8", np.array([[-128, 0, 127]], dtype=np.int8)),
        ("id_fp16", np.array([[0.5, -1.25, 2048.0]], dtype=np.float16)),
        ("id_fp64", np.array([[1e-300, -2.5, 1e300]], dtype=np.float64)),
        ("id_bytes", np.array([[b"a", b"", "é".encode()]], dtype=object)),
    ],
)
def test_datatypes(triton: Any, model: str, array: np.ndarray, binary: bool) -> None:
    inp = httpclient.InferInput(
        "x", list(array.shape), triton_utils.np_to_triton_dtype(array.dtype)
    )
    inp.set_data_from_numpy(array, binary_data=binary)
    out = httpclient.InferRequestedOutput("y", binary_data=binary)
    got = triton.infer(model, [inp], outputs=[out]).as_numpy("y")
    if array.dtype == object:
        # JSON mode hands BYTES back as str, binary mode as bytes.
        as_bytes = [[x if isinstance(x, bytes) else str(x).encode() for x in row] for row in got]
        assert as_bytes == array.tolist()
    else:
        np.testing.assert_array_equal(got, array)


def test_repository_extension(triton: Any) -> None:
    index = triton.get_model_repository_index()
    states = {(e["name"], e["version"]): e["state"] for e in index}
    assert states[("ranker", "1")] == "READY"
    assert states[("broken_optional", "1")] == "FAILED"
    triton.unload_model("toggle")
    try:
        assert not triton.is_model_ready("toggle")
        assert not triton.is_server_ready()
    finally:
        triton.load_model("toggle")
    assert triton.is_model_ready("toggle")
    assert triton.is_server_ready()


def test_errors_reach_the_client(triton: Any) -> None:
    x = np.zeros((1, 64), dtype=np.float64)
    inp = httpclient.InferInput("input", [1, 64], "FP64")
    inp.set_data_from_numpy(x)
    with pytest.raises(triton_utils.InferenceServerException) as bad_type:
        triton.infer("ranker", [inp])
    assert bad_type.value.status() == "400"
    assert "is FP32, not FP64" in bad_type.value.message()
    with pytest.raises(triton_utils.InferenceServerException) as unknown:
        triton.infer("nope", [inp])
    assert unknown.value.status() == "404"
    assert "not registered" in unknown.value.message()
    with pytest.raises(triton_utils.InferenceServerException) as meta:
        triton.get_model_metadata("nope")
    assert "not registered" in meta.value.message()
