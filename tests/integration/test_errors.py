"""Client mistakes get 4xx with a JSON ``{"error": ...}`` body; never a 500."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Server
from .oip import HEADER_LENGTH, binary_request

pytestmark = pytest.mark.integration


def ranker_input(**overrides: Any) -> dict[str, Any]:
    return {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.25] * 64, **overrides}


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get("x-request-id")
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    return str(body["error"])


def post_infer(client: httpx.Client, model: str, doc: Any, **kwargs: Any) -> httpx.Response:
    return client.post(f"/v2/models/{model}/infer", json=doc, **kwargs)


# --------------------------------------------------------------------------- 400


@pytest.mark.parametrize(
    ("doc", "fragments"),
    [
        pytest.param(
            {"inputs": [ranker_input(name="features")]},
            ["has no input 'features'", "its inputs are input"],
            id="unknown-input-name",
        ),
        pytest.param(
            {"inputs": [ranker_input(datatype="FP64")]},
            ["is FP32, not FP64"],
            id="wrong-datatype",
        ),
        pytest.param(
            {"inputs": [ranker_input(datatype="FLOAT32")]},
            ["datatype 'FLOAT32'", "expected one of"],
            id="unknown-datatype",
        ),
        pytest.param(
            {"inputs": [ranker_input(data=[0.25] * 63)]},
            ["declares shape [1, 64] (64 elements) but its data has 63 elements"],
            id="shape-vs-data-length",
        ),
        pytest.param(
            {"inputs": [ranker_input(shape=[1, 63], data=[0.25] * 63)]},
            ["has shape [1, 63]; expected [-1, 64]"],
            id="shape-vs-signature",
        ),
        pytest.param(
            {"inputs": [ranker_input(shape=[64])]},
            ["has shape [64]; expected [-1, 64]"],
            id="rank-vs-signature",
        ),
        pytest.param(
            {"inputs": [ranker_input(shape=[0, 64], data=[])]},
            ["has no rows"],
            id="zero-rows",
        ),
        pytest.param(
            {"inputs": [ranker_input(shape=[129, 64], data=[0.5] * 129 * 64)]},
            ["129 rows", "max_batch_size"],
            id="more-rows-than-max-batch-size",
        ),
        pytest.param(
            {"inputs": [ranker_input(shape=[1, -64])]},
            ["'shape' list of non-negative integers"],
            id="negative-dimension",
        ),
        pytest.param(
            {"inputs": [ranker_input(shape="1,64")]},
            ["'shape' list"],
            id="shape-not-a-list",
        ),
        pytest.param(
            {"inputs": [ranker_input(data=["a"] * 64)]},
            ["input 'input'", "FP32"],
            id="strings-for-fp32",
        ),
        pytest.param(
            {"inputs": [ranker_input(data=[[0.25] * 32, [0.25] * 31])]},
            ["input 'input'", "FP32"],
            id="ragged-nested-data",
        ),
        pytest.param(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64]}]},
            ["neither 'data' nor parameters.binary_data_size"],
            id="no-data",
        ),
        pytest.param({"inputs": []}, ["non-empty 'inputs' list"], id="empty-inputs"),
        pytest.param({}, ["non-empty 'inputs' list"], id="no-inputs"),
        pytest.param([1, 2], ["must be a JSON object"], id="not-an-object"),
        pytest.param(
            {"inputs": [ranker_input(), ranker_input()]},
            ["appears more than once"],
            id="duplicate-input",
        ),
        pytest.param(
            {"inputs": [ranker_input()], "outputs": [{"name": "probability"}]},
            ["has no output 'probability'", "its outputs are score"],
            id="unknown-output-name",
        ),
        pytest.param(
            {"inputs": [ranker_input()], "outputs": "score"},
            ["'outputs' must be a list"],
            id="outputs-not-a-list",
        ),
        pytest.param(
            {"inputs": [ranker_input()], "id": 7},
            ["'id' must be a string"],
            id="numeric-id",
        ),
        pytest.param(
            {"inputs": [ranker_input()], "parameters": [1]},
            ["'parameters' of the request must be a JSON object"],
            id="parameters-not-an-object",
        ),
        pytest.param(
            {"inputs": [ranker_input()], "parameters": {"timeout_ms": -5}},
            ["timeout_ms must be a positive number"],
            id="negative-timeout",
        ),
        pytest.param(
            {"inputs": [ranker_input()], "parameters": {"timeout_ms": "soon"}},
            ["timeout_ms must be a positive number"],
            id="timeout-not-a-number",
        ),
    ],
)
def test_ranker_rejects(client: httpx.Client, doc: Any, fragments: list[str]) -> None:
    assert_error(post_infer(client, "ranker", doc), 400, *fragments)


@pytest.mark.parametrize(
    ("model", "tensor", "fragment"),
    [
        ("id_int8", {"datatype": "INT8", "data": [300, 0, 0]}, "INT8"),
        ("id_uint8", {"datatype": "UINT8", "data": [-1, 0, 0]}, "UINT8"),
        (
            "id_uint64",
            {"datatype": "UINT64", "data": [2**64, 0, 0]},
            "UINT64",
        ),
        ("id_bool", {"datatype": "BOOL", "data": [1, 0, 1]}, "every element must be true or false"),
        ("id_bytes", {"datatype": "BYTES", "data": [1, 2, 3]}, "every element must be a string"),
        ("id_bytes", {"datatype": "BYTES", "data": ["a", "b"]}, "its data has 2 elements"),
        ("id_int32", {"datatype": "INT32", "data": [1, None, 3]}, "INT32"),
        ("id_fp32", {"datatype": "FP32", "data": [1.0, None, 3.0]}, "FP32"),
        ("id_fp16", {"datatype": "FP16", "data": [1.0, 1e6, 3.0]}, "FP16"),
    ],
)
def test_datatype_specific_mistakes(
    client: httpx.Client, model: str, tensor: dict[str, Any], fragment: str
) -> None:
    doc = {"inputs": [{"name": "x", "shape": [1, 3], **tensor}]}
    assert_error(post_infer(client, model, doc), 400, fragment)


@pytest.mark.parametrize(
    ("body", "headers", "fragment"),
    [
        pytest.param(b"{not json", {}, "not valid JSON", id="invalid-json"),
        pytest.param(b"", {}, "not valid JSON", id="empty-body"),
        pytest.param(
            b'{"inputs": [}',
            {"Content-Type": "application/json"},
            "not valid JSON",
            id="truncated-json",
        ),
        pytest.param(
            gzip.compress(b"{}")[:-4] + b"junk",
            {"Content-Encoding": "gzip"},
            "not valid gzip",
            id="bad-gzip",
        ),
        pytest.param(b"{}", {"Content-Encoding": "br"}, "'br' is not supported", id="brotli"),
        pytest.param(
            json.dumps({"inputs": [ranker_input()]}).encode(),
            {HEADER_LENGTH: "999999"},
            "Inference-Header-Content-Length is 999999",
            id="header-length-beyond-body",
        ),
        pytest.param(
            json.dumps({"inputs": [ranker_input()]}).encode(),
            {HEADER_LENGTH: "abc"},
            "Inference-Header-Content-Length is -1",
            id="header-length-not-a-number",
        ),
    ],
)
def test_malformed_bodies(
    client: httpx.Client, body: bytes, headers: dict[str, str], fragment: str
) -> None:
    response = client.post("/v2/models/ranker/infer", content=body, headers=headers)
    assert_error(response, 400, fragment)


def test_binary_size_mismatches(client: httpx.Client) -> None:
    x = np.zeros((1, 64), dtype=np.float32)
    body, headers = binary_request([("input", "FP32", x)])
    # Fewer bytes than the header declares.
    response = client.post("/v2/models/ranker/infer", content=body[:-4], headers=headers)
    assert_error(response, 400, "binary_data_size=256")
    # More bytes than the inputs declare.
    response = client.post("/v2/models/ranker/infer", content=body + b"\0" * 4, headers=headers)
    assert_error(response, 400, "carries 260 bytes of binary data but the inputs declare 256")
    # A declared size that does not fit the shape.
    body, headers = binary_request([("input", "FP32", np.zeros((1, 63), dtype=np.float32))])
    doc = json.loads(body[: int(headers[HEADER_LENGTH])])
    doc["inputs"][0]["shape"] = [1, 64]
    header = json.dumps(doc).encode()
    response = client.post(
        "/v2/models/ranker/infer",
        content=header + body[int(headers[HEADER_LENGTH]) :],
        headers={HEADER_LENGTH: str(len(header))},
    )
    assert_error(response, 400, "needs 256 bytes, but binary_data_size is 252")


def test_binary_bytes_element_overrunning_its_data(client: httpx.Client) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "BYTES",
                    "shape": [1, 3],
                    "parameters": {"binary_data_size": 6},
                }
            ]
        }
    ).encode()
    body = header + b"\x09\x00\x00\x00ab"
    response = client.post(
        "/v2/models/id_bytes/infer", content=body, headers={HEADER_LENGTH: str(len(header))}
    )
    assert_error(response, 400, "overruns its data")


def test_text_embedding_rejects_invalid_utf8(client: httpx.Client) -> None:
    x = np.array([b"\xff\xfe not utf-8"], dtype=object)
    body, headers = binary_request([("text", "BYTES", x)])
    response = client.post("/v2/models/minilm/infer", content=body, headers=headers)
    assert_error(response, 400, "not valid UTF-8")


def test_non_utf8_bytes_to_an_onnx_string_input_is_400(client: httpx.Client) -> None:
    """onnxruntime reads string tensors as text: invalid UTF-8 is the client's mistake (it used
    to fail inside the batch as a 500)."""
    x = np.array([[b"ok", b"\xff\xfe", b"fine"]], dtype=object)
    body, headers = binary_request([("x", "BYTES", x)])
    response = client.post("/v2/models/id_bytes/infer", content=body, headers=headers)
    assert_error(response, 400, "not valid UTF-8")


# --------------------------------------------------------------------------- 404


def test_unknown_model_is_404(client: httpx.Client) -> None:
    doc = {"inputs": [ranker_input()]}
    for path in ("/v2/models/nope/infer", "/v2/models/nope/versions/1/infer"):
        assert_error(client.post(path, json=doc), 404, "model 'nope' is not registered")


@pytest.mark.parametrize("version", ["2", "0", "abc", "-1", "1.0"])
def test_unknown_version_is_404(client: httpx.Client, version: str) -> None:
    response = client.post(
        f"/v2/models/ranker/versions/{version}/infer", json={"inputs": [ranker_input()]}
    )
    assert_error(response, 404, f"model 'ranker' has no version '{version}'")


# --------------------------------------------------------------------------- never 500

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
_tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["input", "x", "text", ""]) | _json,
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BOOL", "BYTES", "fp32"]) | _json,
        "shape": st.lists(st.integers(min_value=-2, max_value=70), max_size=4) | _json,
    },
    optional={
        "data": _json | st.lists(st.floats(width=32, allow_nan=False), min_size=64, max_size=64),
        "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-1, 300) | _json})
        | _json,
    },
)
_document = st.fixed_dictionaries(
    {"inputs": st.lists(_tensor, max_size=3) | _json},
    optional={
        "id": _json,
        "parameters": st.dictionaries(
            st.sampled_from(["timeout_ms", "binary_data_output", "x"]), _json
        )
        | _json,
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["score", "embedding", "y"]) | _json},
                optional={"parameters": _json},
            ),
            max_size=2,
        )
        | _json,
    },
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    model=st.sampled_from(["ranker", "minilm", "id_bytes", "id_bool", "multi"]),
    doc=_document,
    binary_tail=st.binary(max_size=16),
)
def test_random_documents_never_get_500(
    client: httpx.Client, model: str, doc: Any, binary_tail: bytes
) -> None:
    header = json.dumps(doc).encode()
    headers = {HEADER_LENGTH: str(len(header))} if binary_tail else {}
    response = client.post(
        f"/v2/models/{model}/infer", content=header + binary_tail, headers=headers
    )
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert_error(response, 400)


# --------------------------------------------------------------------------- src bugs


def test_more_dimensions_than_numpy_supports_is_400(main_server: Server) -> None:
    """BUG: a shape with more than 64 dimensions reaches numpy's reshape unchecked.

    ``codec._from_json`` (and ``_from_binary``) call ``reshape(shape)`` outside any try; numpy
    raises ValueError, the ASGI fast path only catches ModelportError, and uvicorn answers a
    plain-text 500 without X-Request-ID.
    """
    doc = {"inputs": [ranker_input(shape=[1] * 65, data=[0.5])]}
    with main_server.client() as client:
        assert_error(post_infer(client, "ranker", doc), 400)


@pytest.mark.parametrize(
    "version", ["²", "99999999999999999999", "٣"], ids=["superscript", "huge", "arabic-indic"]
)
def test_odd_version_strings_are_404(main_server: Server, version: str) -> None:
    """BUG: ``RegistryStore.get_version`` accepts any ``str.isdigit()`` version and calls int().

    "²".isdigit() is True but int("²") raises ValueError; a 20-digit version overflows the
    database integer (OverflowError on SQLite, DataError on PostgreSQL). All end as 500s.
    "٣" (Arabic-Indic three) parses as 3 and happens to give a 404.
    """
    doc = {"inputs": [ranker_input()]}
    for method, path in (
        ("GET", f"/v2/models/ranker/versions/{version}"),
        ("GET", f"/v2/models/ranker/versions/{version}/ready"),
        ("POST", f"/v2/models/ranker/versions/{version}/infer"),
    ):
        with main_server.client() as client:
            response = client.request(method, path, json=doc if method == "POST" else None)
        assert_error(response, 404, "has no version")


def test_non_canonical_version_is_consistent(client: httpx.Client) -> None:
    """BUG: "/versions/01" is found by the registry (int("01") == 1) but not by the pool.

    Metadata answers 200 for version "1", while ready says 503 and infer says 503 "registered
    but not loaded; POST .../load" (with Retry-After) about a version that is loaded and
    serving. Either every endpoint should treat "01" as unknown (404) or as "1".
    """
    meta = client.get("/v2/models/ranker/versions/01")
    ready = client.get("/v2/models/ranker/versions/01/ready")
    infer = post_infer(client, "ranker/versions/01", {"inputs": [ranker_input()]})
    statuses = (meta.status_code, ready.status_code, infer.status_code)
    assert statuses in ((404, 404, 404), (200, 200, 200)), statuses
