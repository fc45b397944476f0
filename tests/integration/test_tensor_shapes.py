"""Shapes that describe more elements than any array can hold are a client error, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from .conftest import Push, Server, push_models, running_server
from .oip import HEADER_LENGTH
from .onnx_models import identity_model

pytestmark = pytest.mark.integration

HUGE_SHAPES = [[0, 9223372036854775807], [0, 2**62, 2**62]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("shapes")
    db = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    pushes = [
        Push("floats", identity_model(workdir / "floats.onnx", "FP32", ("batch", "n"))),
        Push("texts", identity_model(workdir / "texts.onnx", "BYTES", ("batch", "n"))),
    ]
    push_models(workdir, db, pushes)
    with running_server(workdir, db) as running:
        yield running


def assert_too_large(response: httpx.Response, shape: list[int]) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "too large" in error and str(shape) in error, error


@pytest.mark.parametrize("shape", HUGE_SHAPES)
@pytest.mark.parametrize(("model", "datatype"), [("floats", "FP32"), ("texts", "BYTES")])
def test_an_empty_tensor_with_a_huge_dimension_gets_400_in_json(
    server: Server, model: str, datatype: str, shape: list[int]
) -> None:
    doc = {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": []}]}
    with server.client() as client:
        assert_too_large(client.post(f"/v2/models/{model}/infer", json=doc), shape)


@pytest.mark.parametrize("shape", HUGE_SHAPES)
@pytest.mark.parametrize(("model", "datatype"), [("floats", "FP32"), ("texts", "BYTES")])
def test_an_empty_tensor_with_a_huge_dimension_gets_400_in_binary(
    server: Server, model: str, datatype: str, shape: list[int]
) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": 0},
                }
            ]
        }
    ).encode()
    with server.client() as client:
        response = client.post(
            f"/v2/models/{model}/infer",
            content=header,
            headers={HEADER_LENGTH: str(len(header)), "content-type": "application/octet-stream"},
        )
    assert_too_large(response, shape)
