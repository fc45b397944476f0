"""The OpenAPI document, made to say what the server really answers.

FastAPI's generated document promises a 422 for every route with a body and documents none of
the errors the edge answers. Here each operation gets the answers it can really give: 400 for
a request that does not validate, 401/403/429 where a key is needed (with the scope it must
hold, in ``x-modelport-scope``), 404 where the path names something, 413 where a body is read,
all with the ``{"error": ...}`` body; and the OIP infer routes, which the fast path serves
outside FastAPI, are described with their real request and response schemas.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from modelport.api.access import INFER, Access, routes

_ERROR = {"$ref": "#/components/schemas/Error"}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What was wrong, and what to do."}},
}
_ANSWERS = {
    400: "The request does not validate (body, parameters or a model's inputs).",
    401: "No API key, or one that is not valid.",
    403: "The key lacks the scope this operation needs (or the platform admin key).",
    404: "No such resource in the caller's tenant.",
    413: "The body exceeds the limit of this operation, the model or the tenant.",
    429: "The tenant is over its rate, concurrency or in-flight body budget (Retry-After).",
    503: "Not ready, or overloaded; retry after Retry-After.",
    504: "The request ran past its deadline.",
}
_BODY_METHODS = frozenset({"post", "put", "patch", "delete"})


def install_openapi(api: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = build_openapi(api)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def build_openapi(api: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=api.title, version=api.version, description=api.description, routes=api.routes
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Error"] = _ERROR_SCHEMA
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas.update(_OIP_SCHEMAS)
    components["securitySchemes"] = {
        "apiKey": {"type": "http", "scheme": "bearer", "description": "A modelport API key."}
    }
    paths = schema.setdefault("paths", {})
    for route, access in routes(api):
        if not getattr(route, "include_in_schema", False) or not hasattr(route, "dependant"):
            continue
        for method in route.methods or ():
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is not None:
                _describe(operation, access, method.lower(), "{" in route.path_format)
    paths["/v2/models/{model}/infer"] = {"post": _infer_operation(versioned=False)}
    paths["/v2/models/{model}/versions/{version}/infer"] = {
        "post": _infer_operation(versioned=True)
    }
    return schema


def _describe(operation: dict[str, Any], access: Access, method: str, has_params: bool) -> None:
    responses = operation.setdefault("responses", {})
    if responses.get("422", {}).get("description") == "Validation Error":
        # FastAPI's own promise, which the server never keeps (a bad request is 400); a 422 a
        # route declared itself (an Idempotency-Key reused) stays.
        responses.pop("422")
    codes = [400]
    if not access.public:
        codes += [401, 403, 429]
        operation["security"] = [{"apiKey": []}]
        operation["x-modelport-scope"] = "platform-admin" if access.platform_admin else access.scope
    if has_params:
        codes.append(404)
    if method in _BODY_METHODS:
        codes.append(413)
    for code in codes:
        _error(responses, code)
    # Answers a route declared itself (409, 503) get the error body too.
    for code, answer in responses.items():
        if code.isdigit() and int(code) >= 400:
            answer.setdefault("content", {"application/json": {"schema": _ERROR}})


def _error(responses: dict[str, Any], code: int) -> None:
    responses.setdefault(
        str(code),
        {"description": _ANSWERS[code], "content": {"application/json": {"schema": _ERROR}}},
    )


def _infer_operation(*, versioned: bool) -> dict[str, Any]:
    parameters = [_path_param("model", "Model name, or model@alias.")]
    if versioned:
        parameters.append(_path_param("version", "Version number."))
    parameters += [
        _header("X-Model-Alias", "Serve the version this alias points at."),
        _header("X-Routing-Key", "Sticky routing key: keeps a caller on one version."),
        _header(
            "X-Experiment-Unit",
            "The caller's experiment unit (user, session or custom key value): a running "
            "experiment covering this model serves the call by the unit's variant.",
        ),
        _header(
            "Inference-Header-Content-Length",
            "Binary tensor extension: length of the JSON part of the body.",
        ),
    ]
    responses: dict[str, Any] = {
        "200": {
            "description": "The outputs. With the binary tensor extension, a JSON header of "
            "Inference-Header-Content-Length bytes followed by the binary outputs.",
            "headers": {
                "X-Model-Version": {"schema": {"type": "string"}, "description": "Served version."}
            },
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferResponse"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }
    for code in (400, 401, 403, 404, 413, 429, 503, 504):
        _error(responses, code)
    return {
        "tags": ["inference"],
        "summary": "Run inference" + (" on one version" if versioned else ""),
        "description": "Open Inference Protocol v2. Unpinned calls follow the model's routing "
        "(rollout split, weighted/sticky policy or the production alias). The body may be at "
        "most what the model can take: max_batch_size rows of its inputs.",
        "operationId": "infer_version" if versioned else "infer",
        "parameters": parameters,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "responses": responses,
        "security": [{"apiKey": []}],
        "x-modelport-scope": INFER.scope,
    }


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }


_DATATYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": _DATATYPES},
        "parameters": {
            "type": "object",
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
        },
        "data": {
            "type": "array",
            "description": "Row-major values, flat or nested; absent with binary_data_size.",
        },
    },
}
_OIP_SCHEMAS: dict[str, Any] = {
    "InferTensor": _TENSOR,
    "InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {
                "type": "object",
                "description": "e.g. timeout_ms, binary_data_output, the sticky routing key.",
            },
            "inputs": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/InferTensor"},
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data": {"type": "boolean"}},
                        },
                    },
                },
            },
        },
    },
    "InferResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/InferTensor"}},
        },
    },
}
