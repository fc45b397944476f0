"""``/docs``: the API's Swagger UI, served from the package, so it works with no network.

The UI's scripts and styles come from the ``swagger-ui-bundle-v2`` package (Swagger UI 5,
which reads OpenAPI 3.1) under ``/docs/assets``; nothing is loaded from a CDN.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from modelport.api.access import Public

ASSETS = "/docs/assets"


def install_docs(api: FastAPI) -> None:
    @api.get("/docs", include_in_schema=False, dependencies=[Public])
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="modelport API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    api.mount(ASSETS, StaticFiles(directory=Path(str(swagger_ui_path))), name="docs-assets")
