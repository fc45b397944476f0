"""Every OIP datatype through a real ONNX Identity model, in JSON and with the binary extension."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest

from .conftest import DTYPE_MODELS
from .oip import HEADER_LENGTH, NUMPY_DTYPES, binary_request, decode_response, json_tensor

pytestmark = pytest.mark.integration

#: Two rows of three values per datatype, with each type's extremes.
VALUES: dict[str, list[list[Any]]] = {
    "BOOL": [[True, False, True], [False, False, True]],
    "UINT8": [[0, 1, 255], [7, 128, 254]],
    "UINT16": [[0, 1, 65535], [256, 32768, 9]],
    "UINT32": [[0, 1, 2**32 - 1], [2**31, 65536, 3]],
    "UINT64": [[0, 1, 2**64 - 1], [2**63, 2**53 + 1, 5]],
    "INT8": [[-128, 0, 127], [-1, 1, 42]],
    "INT16": [[-32768, 0, 32767], [-1, 1, 300]],
    "INT32": [[-(2**31), 0, 2**31 - 1], [-1, 1, 70000]],
    "INT64": [[-(2**63), 0, 2**63 - 1], [-1, 2**53 + 1, -(2**53) - 1]],
    "FP16": [[0.5, -1.25, 65504.0], [-0.0, 0.0009765625, 2048.0]],
    "FP32": [[1.5, -3.25, 3.4028234663852886e38], [1e-30, -0.0, 7.0]],
    "FP64": [[1e-300, -2.5, 1.7976931348623157e308], [0.1, -0.0, 5e-324]],
    "BYTES": [["hello", "", "héllo wörld ✓"], ["a", "tab\tsep", '"quoted"']],
}
assert set(VALUES) == set(NUMPY_DTYPES)

MODEL_OF = {datatype: model for model, datatype in DTYPE_MODELS.items()}


def as_array(datatype: str, values: list[list[Any]]) -> np.ndarray:
    if datatype == "BYTES":
        out = np.empty((len(values), len(values[0])), dtype=object)
        out[:] = [[s.encode() for s in row] for row in values]
        return out
    return np.asarray(values, dtype=NUMPY_DTYPES[datatype])


def assert_same(datatype: str, got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    if datatype == "BYTES":
        assert got.tolist() == expected.tolist()
    else:
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("nested", [True, False], ids=["nested", "flat"])
@pytest.mark.parametrize("datatype", list(VALUES))
def test_json_round_trip(client: httpx.Client, datatype: str, nested: bool) -> None:
    expected = as_array(datatype, VALUES[datatype])
    tensor = json_tensor("x", datatype, expected)
    if nested:
        tensor["data"] = VALUES[datatype]
    response = client.post(f"/v2/models/{MODEL_OF[datatype]}/infer", json={"inputs": [tensor]})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert HEADER_LENGTH.lower() not in response.headers
    doc, arrays = decode_response(response)
    [out] = doc["outputs"]
    assert out["name"] == "y"
    assert out["datatype"] == datatype
    assert out["shape"] == [2, 3]
    assert isinstance(out["data"], list) and len(out["data"]) == 6  # flat, row-major
    assert_same(datatype, arrays["y"], expected)


@pytest.mark.parametrize(
    ("binary_in", "binary_out"),
    [(True, True), (True, False), (False, True)],
    ids=["binary-binary", "binary-json", "json-binary"],
)
@pytest.mark.parametrize("datatype", list(VALUES))
def test_binary_round_trip(
    client: httpx.Client, datatype: str, binary_in: bool, binary_out: bool
) -> None:
    expected = as_array(datatype, VALUES[datatype])
    parameters = {"binary_data_output": True} if binary_out else None
    if binary_in:
        body, headers = binary_request(
            [("x", datatype, expected)], parameters=parameters, request_id="bin-1"
        )
    else:
        doc = {"id": "bin-1", "inputs": [json_tensor("x", datatype, expected)]}
        if parameters:
            doc["parameters"] = parameters
        body, headers = json.dumps(doc).encode(), {"Content-Type": "application/json"}
    response = client.post(f"/v2/models/{MODEL_OF[datatype]}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    doc, arrays = decode_response(response)
    assert doc["id"] == "bin-1"
    [out] = doc["outputs"]
    if binary_out:
        assert response.headers["content-type"] == "application/octet-stream"
        assert int(response.headers[HEADER_LENGTH]) < len(response.content)
        assert "data" not in out
        assert out["parameters"]["binary_data_size"] > 0
    else:
        assert response.headers["content-type"] == "application/json"
        assert "data" in out
    assert out["datatype"] == datatype
    assert_same(datatype, arrays["y"], expected)


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_binary_carries_non_finite_floats(client: httpx.Client, datatype: str) -> None:
    x = np.array([[np.nan, np.inf, -np.inf]], dtype=NUMPY_DTYPES[datatype])
    body, headers = binary_request([("x", datatype, x)], parameters={"binary_data_output": True})
    response = client.post(f"/v2/models/{MODEL_OF[datatype]}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    _, arrays = decode_response(response)
    np.testing.assert_array_equal(arrays["y"], x)


def test_binary_bytes_keep_every_byte(client: httpx.Client) -> None:
    x = np.empty((1, 3), dtype=object)
    x[:] = [[b"nul\x00inside", b"", "ünïcödé ✓".encode()]]
    body, headers = binary_request([("x", "BYTES", x)], parameters={"binary_data_output": True})
    response = client.post("/v2/models/id_bytes/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    _, arrays = decode_response(response)
    assert arrays["y"].tolist() == x.tolist()


def test_many_rows(client: httpx.Client) -> None:
    x = np.arange(64 * 3, dtype=np.int32).reshape(64, 3)
    body, headers = binary_request([("x", "INT32", x)], parameters={"binary_data_output": True})
    response = client.post("/v2/models/id_int32/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(decode_response(response)[1]["y"], x)


# --------------------------------------------------------------------------- outputs


MULTI_X = np.array([[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]], dtype=np.float32)


def _multi(client: httpx.Client, **doc: Any) -> httpx.Response:
    body = {"inputs": [json_tensor("x", "FP32", MULTI_X)], **doc}
    response = client.post("/v2/models/multi/infer", json=body)
    assert response.status_code == 200, response.text
    return response


def test_all_outputs_by_default(client: httpx.Client) -> None:
    doc, arrays = decode_response(_multi(client))
    assert [o["name"] for o in doc["outputs"]] == ["doubled", "negated", "total"]
    np.testing.assert_array_equal(arrays["doubled"], MULTI_X * 2)
    np.testing.assert_array_equal(arrays["negated"], -MULTI_X)
    np.testing.assert_array_equal(arrays["total"], MULTI_X.sum(axis=1, keepdims=True))
    assert doc["outputs"][2]["shape"] == [2, 1]


def test_one_selected_output(client: httpx.Client) -> None:
    doc, arrays = decode_response(_multi(client, outputs=[{"name": "total"}]))
    assert [o["name"] for o in doc["outputs"]] == ["total"]
    np.testing.assert_array_equal(arrays["total"], MULTI_X.sum(axis=1, keepdims=True))


def test_selected_outputs_keep_the_requested_order_and_encoding(client: httpx.Client) -> None:
    response = _multi(
        client,
        outputs=[
            {"name": "negated", "parameters": {"binary_data": True}},
            {"name": "doubled"},
        ],
    )
    assert response.headers["content-type"] == "application/octet-stream"
    doc, arrays = decode_response(response)
    assert [o["name"] for o in doc["outputs"]] == ["negated", "doubled"]
    assert "data" not in doc["outputs"][0]
    assert doc["outputs"][1]["data"] == (MULTI_X * 2).ravel().tolist()
    np.testing.assert_array_equal(arrays["negated"], -MULTI_X)


def test_output_parameter_overrides_binary_data_output(client: httpx.Client) -> None:
    response = _multi(
        client,
        parameters={"binary_data_output": True},
        outputs=[{"name": "doubled", "parameters": {"binary_data": False}}, {"name": "total"}],
    )
    doc, arrays = decode_response(response)
    assert "data" in doc["outputs"][0]
    assert doc["outputs"][1]["parameters"]["binary_data_size"] == 2 * 4
    np.testing.assert_array_equal(arrays["total"], MULTI_X.sum(axis=1, keepdims=True))


# --------------------------------------------------------------------------- parameters and ids


def test_unknown_parameters_are_ignored(client: httpx.Client) -> None:
    tensor = json_tensor("x", "FP32", MULTI_X)
    tensor["parameters"] = {"content_type": "np", "anything": [1, 2]}
    body = {
        "inputs": [tensor],
        "parameters": {"custom": "value", "priority": 3, "timeout_ms": 10_000},
        "outputs": [{"name": "total", "parameters": {"classification": 0}}],
    }
    response = client.post("/v2/models/multi/infer", json=body)
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == ["total"]


def test_request_id_is_echoed_only_when_sent(client: httpx.Client) -> None:
    assert "id" not in _multi(client).json()
    assert _multi(client, id="my-request-7").json()["id"] == "my-request-7"
    assert _multi(client, id="").json()["id"] == ""
