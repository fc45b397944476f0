"""What a tenant sees of a version: its digest and interface, never where the server keeps it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .conftest import Push, Server, push_models, running_server
from .onnx_models import scale_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("version-detail")
    db = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    push_models(workdir, db, [Push("ranker", scale_model(workdir / "ranker.onnx", 2.0))])
    with running_server(workdir, db) as running:
        yield running


def test_version_detail_names_the_artifact_by_digest_and_shows_no_server_path(
    server: Server,
) -> None:
    with server.client() as client:
        response = client.get("/v1/models/ranker/versions/1")
        listed = client.get("/v1/models/ranker")
    assert response.status_code == 200, response.text
    detail = response.json()
    assert len(detail["sha256"]) == 64
    assert detail["signature"]["inputs"][0]["name"] == "x"
    assert "artifact_uri" not in detail
    for body in (response.text, listed.text):
        assert str(server.workdir) not in body
        assert "file://" not in body
