"""Fuzz every operation of the live server's OpenAPI schema with schemathesis.

A dedicated server (fresh SQLite registry, two tiny models) answers generated requests, valid and
invalid: every operation with the tenant's key, then the tenancy admin API and /metrics with the
platform admin key. Every response must be free of server errors, match the schema where the
schema declares it, and every error must be a JSON object ``{"error": "<message>"}`` without a
Python traceback.

Each operation gets its subtests: schemathesis's deterministic coverage cases (boundary values,
missing or malformed parts, unexpected methods), then ``MAX_EXAMPLES`` Hypothesis examples of
valid requests and as many of invalid ones (where anything can be invalid), derandomised so that
a run is reproducible. Valid requests are steered towards the models, tenant and keys that exist
and towards extreme numbers; a subtest reports every distinct failure it met, not just the first.

This drives schemathesis through its Python API (``APIOperation.as_strategy``,
``BaseSchema.iter_coverage_cases``, ``Case.call_and_validate``) rather than through
``schemathesis.pytest.from_fixture``: that loader reads ``Function._nodeid``, which pytest 9.2
no longer has (schemathesis 4.32.5 fails with AttributeError before the first request).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import (
    APIOperation,
    BaseSchema,
    Case,
    CheckContext,
    CheckFunction,
    GenerationMode,
    HookContext,
    Response,
)
from schemathesis.errors import FailureGroup

from .conftest import TENANT, Push, Server, push_models, running_server
from .onnx_models import ONNX_TYPES, identity_model, scale_model

pytestmark = pytest.mark.integration

#: Hypothesis examples per operation, on top of the coverage cases.
MAX_EXAMPLES = 40
#: Seeds schemathesis's own randomness (the coverage cases); Hypothesis is derandomised.
SEED = 20240611

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

#: Values mixed into valid requests, so that the fuzzer gets past "no such model" into the
#: registry, the runtime and the key store. The models take ``x``: FP32 ``[batch, width]``.
MODEL_WIDTHS = {"ident": 3, "scale": 4}
#: A key prefix that `fuzz_operations` replaces with the prefix of a new key of the tenant, so
#: that revoking and rotating get past "no such key" every time.
FRESH_KEY = "fresh-key"
KNOWN_PATH_VALUES = {
    "model": list(MODEL_WIDTHS),
    "version": ["1", "2"],
    "tenant": [TENANT],
    "prefix": [FRESH_KEY],
}
#: Body properties whose arbitrary strings the server rejects, and values it takes.
KNOWN_BODY_VALUES: dict[str, list[Any]] = {
    "scopes": [["read"], ["infer", "read", "write", "admin"]]
}
#: Magnitudes that overflow C integers, database columns, timedeltas and rate arithmetic.
EXTREME_INTEGERS = [2**31, 2**63, 2**64]
EXTREME_FLOATS = [5e-324, 1e-300, 1e300, sys.float_info.max]
OIP_DATATYPES = [*ONNX_TYPES, "FP8", "fp32", ""]
ABSENT = object()

#: Statuses the API answers on purpose, always with ``{"error": …}``, that the schema does not
#: declare: FastAPI's generated schema lists only the success status and a 422 that the server
#: never sends (request validation errors leave as 400). The schema should declare these
#: (``responses=`` on the routers); until it does, these are not "undocumented status"
#: failures here, and ``error_bodies_are_clean`` checks their bodies instead.
DELIBERATE_ERROR_STATUSES = frozenset({400, 401, 403, 404, 405, 409, 413, 429, 503})

READY_PATHS = frozenset(
    {
        "/v2/health/ready",
        "/v2/models/{model}/ready",
        "/v2/models/{model}/versions/{version}/ready",
    }
)


@schemathesis.serializer("application/x-ndjson")
def _ndjson(_ctx: Any, value: Any) -> bytes:
    """A catalog import's body: a generated string as it is, anything else as one JSON line."""
    if isinstance(value, bytes):
        return value
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


SCHEMATHESIS_CONFIG: dict[str, Any] = {
    "seed": SEED,
    "checks": {
        # 503 is the deliberate "not ready or overloaded, retry later" answer: the readiness
        # probes declare it, and inference answers it for a model the fuzzer unloaded. Every
        # other 5xx is a bug.
        "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
        # Replaced by `status_is_declared_or_deliberate` (see DELIBERATE_ERROR_STATUSES), which
        # still fails for any other status the schema does not declare.
        "status_code_conformance": {"enabled": False},
    },
    "operations": [
        {
            # An inference request can be schema-valid and still wrong for the model (unknown
            # datatype or input name, data that does not fill the shape): JSON Schema cannot
            # express what a model takes, so a 400 for a valid-looking request is right here.
            "include-path-regex": "/infer$",
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429", "503"]
                }
            },
        },
        {
            # Golden examples carry OIP requests (same reasoning as inference), and a rollout
            # plan's steps must increase and end at 100, which JSON Schema cannot say either.
            "include-path-regex": "/(golden|rollouts)$",
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429", "503"]
                }
            },
        },
        {
            # A feature view's feature names must be distinct, pushed values must match the
            # view's dtypes and be observed at most an hour ahead, and a read needs the keys of
            # every view's entity: JSON Schema cannot say any of that either.
            "include-path-regex": "^/v1/features/",
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429", "503"]
                }
            },
        },
        {
            # A listing's cursor must be one the API returned, an import's body is NDJSON that
            # JSON Schema does not describe, a conditional write (If-Match) of a product at
            # another version is refused with 412, and an Idempotency-Key sent again with
            # another body with 422, however valid each request looks.
            "include-path-regex": "^/v1/catalog/",
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": [
                        "2xx",
                        "3xx",
                        "400",
                        "401",
                        "403",
                        "404",
                        "409",
                        "412",
                        "422",
                        "429",
                    ]
                }
            },
        },
        {
            # Events are checked one by one and answered in the body (accepted, duplicates,
            # rejected with the reason): an event that breaks the schema is a rejected entry of
            # a 200, not a 400 for its batch. An Idempotency-Key sent again with another batch
            # is 422.
            "include-path-regex": "^/v1/events$",
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "422", "429"]
                },
                "negative_data_rejection": {"enabled": False},
            },
        },
        {
            # An experiment's weights must sum to 100 with at most two decimals, its variant
            # names be distinct, each target match the surface, a custom unit name its key; a
            # started experiment's variants change only with a new run (409). JSON Schema
            # cannot say any of that.
            "include-path-regex": "^/v1/experiments",
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429"]
                }
            },
        },
        {
            # A search query must hold some text besides blanks and its price bounds be in
            # order; semantic mode needs the tenant's embedding model (404 without it, as on
            # this server) and every mode waits for the index at start (503). JSON Schema
            # cannot say any of that.
            "include-path-regex": "^/v1/search$",
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "400", "401", "403", "404", "429", "503"]
                }
            },
        },
        {
            # An NDJSON body is text, whatever it holds: a body generated to violate the
            # schema (a JSON array) still arrives as a line, answered per line.
            "include-path-regex": "^/v1/catalog/import$",
            "checks": {"negative_data_rejection": {"enabled": False}},
        },
    ],
}


# --------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own, so that the fuzzer cannot disturb the shared ``main_server``."""
    workdir = tmp_path_factory.mktemp("fuzz")
    db = f"sqlite+aiosqlite:///{workdir / 'registry.db'}"
    push_models(
        workdir,
        db,
        [
            Push("ident", identity_model(workdir / "ident.onnx", "FP32")),
            Push("scale", scale_model(workdir / "v1" / "scale.onnx", 1.0)),
            Push("scale", scale_model(workdir / "v2" / "scale.onnx", 2.0)),
        ],
    )
    # Quota changes apply at once (they are cached with the key for the TTL otherwise), so that
    # `tenant_is_still_served` sees the quotas the admin fuzzing just set.
    with running_server(workdir, db, auth_cache_ttl_s="0.001") as server:
        yield server


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Server) -> BaseSchema:
    config = schemathesis.Config.from_dict(SCHEMATHESIS_CONFIG)
    schema = schemathesis.openapi.from_url(fuzz_server.url("/openapi.json"), config=config)

    @schema.hook
    def flatmap_case(_context: HookContext, case: Case) -> st.SearchStrategy[Case]:
        """Mix known names, known-good and extreme body values and near-valid inference requests
        into valid cases (only: an invalid case must stay invalid)."""
        meta = case.meta
        if meta is None or not meta.generation.mode.is_positive:
            return st.just(case)
        names = st.fixed_dictionaries(
            {
                name: st.sampled_from([*KNOWN_PATH_VALUES[name], None])
                for name in case.path_parameters or {}
                if name in KNOWN_PATH_VALUES
            }
        )
        return names.flatmap(lambda values: _with_known(case, values))

    return schema


def _with_known(case: Case, values: dict[str, str | None]) -> st.SearchStrategy[Case]:
    for name, value in values.items():
        if value is not None:
            case.path_parameters[name] = value
    if not case.path.endswith("/infer"):
        return _with_body_values(case)
    width = MODEL_WIDTHS.get(case.path_parameters["model"], 3)
    bodies = st.one_of(infer_requests(width), st.just(case.body))
    return bodies.map(lambda body: _set_body(case, body))


def _with_body_values(case: Case) -> st.SearchStrategy[Case]:
    """Put known-good values into a JSON body, and at most one extreme number (schemathesis
    re-validates an edited case: one that leaves the schema counts as invalid)."""
    definition = case.operation.get_body_for_media_type("application/json")
    if definition is None:
        return st.just(case)
    # A valid case of an object body has a dict, or none at all (None or schemathesis's NotSet).
    body = case.body if isinstance(case.body, dict) else {}
    properties = definition.validation_schema.get("properties", {})
    known = st.fixed_dictionaries(
        {
            name: st.one_of(
                st.just(body.get(name, ABSENT)), st.sampled_from(KNOWN_BODY_VALUES[name])
            )
            for name in properties
            if name in KNOWN_BODY_VALUES
        }
    )
    extremes = [
        (name, value) for name, schema in properties.items() for value in _extremes_for(schema)
    ]
    extreme = st.one_of(st.none(), st.sampled_from(extremes)) if extremes else st.none()
    return st.tuples(known, extreme).map(lambda drawn: _set_body(case, _merged(body, *drawn)))


def _extremes_for(schema: dict[str, Any]) -> list[float]:
    types = {schema.get("type"), *(option.get("type") for option in schema.get("anyOf", []))}
    if "number" in types:
        return [*EXTREME_FLOATS, *EXTREME_INTEGERS]
    if "integer" in types:
        return EXTREME_INTEGERS
    return []


def _merged(
    body: dict[str, Any], known: dict[str, Any], extreme: tuple[str, float] | None
) -> dict[str, Any]:
    merged = {**body, **known, **dict([extreme] if extreme else [])}
    return {name: value for name, value in merged.items() if value is not ABSENT}


def _set_body(case: Case, body: Any) -> Case:
    case.body = body
    return case


@st.composite
def infer_requests(draw: st.DrawFn, width: int) -> dict[str, Any]:
    """Schema-valid OIP requests, most of them close to what the model takes (``x``: FP32
    ``[batch, width]``), some with the binary-data parameters."""
    shape = draw(
        st.one_of(
            st.integers(1, 3).map(lambda rows: [rows, width]),
            st.lists(st.integers(-1, 4), max_size=3),
        )
    )
    size = math.prod(shape) if all(d >= 0 for d in shape) else 0
    values = st.floats(width=32, allow_nan=False, allow_infinity=False)
    scalar = st.one_of(values, st.integers(-(2**70), 2**70), st.booleans(), st.text(max_size=4))
    tensor: dict[str, Any] = {
        "name": draw(st.sampled_from(["x", "x", "y"])),
        "datatype": draw(st.one_of(st.just("FP32"), st.sampled_from(OIP_DATATYPES))),
        "shape": shape,
        "data": draw(
            st.one_of(
                st.lists(values, min_size=size, max_size=size),
                st.lists(st.one_of(scalar, st.lists(scalar, max_size=4)), max_size=12),
            )
        ),
    }
    request: dict[str, Any] = {"inputs": [tensor]}
    if draw(st.booleans()):
        request["id"] = draw(st.text(max_size=8))
    if draw(st.booleans()):
        request["parameters"] = {"binary_data_output": draw(st.booleans())}
    if draw(st.booleans()):
        request["outputs"] = [
            {"name": draw(st.sampled_from(["y", "z"])), "parameters": {"binary_data": True}}
        ]
    return request


# --------------------------------------------------------------------------- checks


def status_is_declared_or_deliberate(_ctx: CheckContext, response: Response, case: Case) -> None:
    """schemathesis's ``status_code_conformance``, except for ``DELIBERATE_ERROR_STATUSES``."""
    status = response.status_code
    declared = case.operation.responses.status_codes
    if status in DELIBERATE_ERROR_STATUSES or "default" in declared:
        return
    assert any(re.fullmatch(code.upper().replace("X", "."), str(status)) for code in declared), (
        f"{case.operation.label} answered {status}, which its schema does not declare "
        f"({', '.join(declared)}): {response.text[:500]}"
    )


def error_bodies_are_clean(_ctx: CheckContext, response: Response, case: Case) -> None:
    """An error is ``{"error": "<message>"}`` and never leaks a Python traceback."""
    if response.status_code < 400:
        return
    text = response.text
    assert "Traceback" not in text and 'File "' not in text, f"a traceback leaked: {text[:2000]}"
    try:
        body = json.loads(text)
    except ValueError:
        raise AssertionError(f"the error body is not JSON: {text[:2000]!r}") from None
    assert isinstance(body, dict), f"the error body is not a JSON object: {text[:2000]}"
    if response.status_code == 503 and case.operation.path in READY_PATHS:
        assert body.get("ready") is False, f"a readiness probe's 503 says: {text[:2000]}"
        return
    assert isinstance(body.get("error"), str) and body["error"], (
        f'the error body has no "error" message: {text[:2000]}'
    )


PROBE_REQUEST = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}


def tenant_probe(server: Server) -> CheckFunction:
    """After the admin fuzzing changed the tenant (quotas, suspension), the tenant's own requests
    may be refused (403, 429, 503) but must not fail (5xx)."""

    def tenant_is_still_served(_ctx: CheckContext, response: Response, case: Case) -> None:
        if response.status_code >= 300 or (case.path_parameters or {}).get("tenant") != TENANT:
            return
        auth = {"Authorization": f"Bearer {server.key}"}
        for method, path, body in [
            ("GET", "/v2/models/ident", None),
            ("POST", "/v2/models/ident/infer", PROBE_REQUEST),
        ]:
            after = (
                f"after {case.operation.label} with {case.body!r}, {method} {path} as the tenant"
            )
            try:
                # A connection of its own, as a new client would open.
                probe = requests.request(
                    method, server.url(path), json=body, headers=auth, timeout=30
                )
            except requests.ConnectionError as exc:
                raise AssertionError(f"{after} lost the connection: {exc}") from None
            assert probe.status_code < 500 or probe.status_code == 503, (
                f"{after} answered {probe.status_code}: {probe.text[:500]}"
            )

    return tenant_is_still_served


def reset_tenant(server: Server, http: requests.Session) -> None:
    """Default quotas and an active tenant again, so that a finding does not spill over into
    the next operation's results."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    for method, path, body in [
        ("PUT", f"/v1/tenants/{TENANT}/quotas", {}),
        ("POST", f"/v1/tenants/{TENANT}/resume", None),
    ]:
        response = http.request(method, server.url(path), json=body, headers=auth, timeout=30)
        assert response.status_code == 200, response.text


# --------------------------------------------------------------------------- the runner


def fuzz_operations(
    schema: BaseSchema,
    subtests: pytest.Subtests,
    *,
    server: Server,
    key: str,
    http: requests.Session,
    path_regex: str = "",
    extra_checks: tuple[CheckFunction, ...] = (),
    after_each: Callable[[], None] | None = None,
) -> list[str]:
    """Fuzz each operation whose path matches ``path_regex`` with ``key``; returns their labels."""

    def call(case: Case) -> None:
        prefix = (case.path_parameters or {}).get("prefix")
        if prefix == server.key.split("_")[1]:
            return  # revoking or rotating the fuzzer's own key would end the run early
        if prefix == FRESH_KEY:
            case.path_parameters["prefix"] = new_key_prefix(server, http)
        case.call_and_validate(
            base_url=server.base_url,
            session=http,
            headers={"Authorization": f"Bearer {key}"},
            additional_checks=[
                status_is_declared_or_deliberate,
                error_bodies_are_clean,
                *extra_checks,
            ],
            timeout=30,
        )

    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()  # raises for an operation schemathesis cannot read
        if not re.search(path_regex, operation.path):
            continue
        labels.append(operation.label)
        with subtests.test(msg=f"{operation.label} coverage"):
            run_coverage(schema, operation, call)
        for mode in GenerationMode:
            if mode.is_negative and not can_be_invalid(operation):
                continue
            with subtests.test(msg=f"{operation.label} {mode.value} fuzzing"):
                run_fuzzing(operation, mode, call)
        if after_each is not None:
            with subtests.test(msg=f"{operation.label} clean-up"):
                after_each()
    return labels


def new_key_prefix(server: Server, http: requests.Session) -> str:
    response = http.post(
        server.url(f"/v1/tenants/{TENANT}/keys"),
        json={"scopes": ["read"], "name": "fuzz-victim"},
        headers={"Authorization": f"Bearer {server.admin_key}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["prefix"])


class Failures:
    """Each distinct failure of one operation, with the first request that showed it. The run
    goes on after a failure, so that one finding cannot hide another (at the cost of Hypothesis's
    shrinking: the requests reported are the first found, not the smallest)."""

    def __init__(self, call: Callable[[Case], None]) -> None:
        self._call = call
        self.found: dict[tuple[tuple[str, str, int | None], ...], str] = {}

    def run(self, case: Case) -> None:
        try:
            self._call(case)
        except FailureGroup as group:
            key = tuple(
                sorted(
                    (failure.code, failure.title, getattr(failure, "status_code", None))
                    for failure in group.exceptions
                )
            )
            self.found.setdefault(key, str(group))

    def check(self, what: str) -> None:
        if self.found:
            raise AssertionError(
                f"{len(self.found)} distinct failure(s) in {what}:\n\n"
                + "\n\n".join(self.found.values())
            )


def run_coverage(schema: BaseSchema, operation: APIOperation, call: Callable[[Case], None]) -> None:
    failures = Failures(call)
    cases = schema.iter_coverage_cases(
        operation,
        generation_modes=list(GenerationMode),
        generation_config=schema.config.generation,
    )
    for case in cases:
        failures.run(case)
    failures.check(f"the coverage cases of {operation.label}")


def can_be_invalid(operation: APIOperation) -> bool:
    """False when every input is a path parameter that takes any string: a request can then only
    be invalid by its method or path, which the coverage cases already try."""
    return len(operation.body) > 0 or any(
        parameter.location.value != "path"
        or set(parameter.optimized_schema) - {"type", "title", "description"}
        or parameter.optimized_schema.get("type") != "string"
        for parameter in operation.iter_parameters()
    )


def run_fuzzing(
    operation: APIOperation, mode: GenerationMode, call: Callable[[Case], None]
) -> None:
    failures = Failures(call)

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(mode))
    def fuzz(case: Case) -> None:
        failures.run(case)

    fuzz()
    failures.check(f"the {mode.value} fuzzing of {operation.label}")


# --------------------------------------------------------------------------- the tests


#: The tenant's walk fuzzes every operation (about a hundred, two phases each) in one test: on a
#: slow or busy 2-core machine it needs more than the suite's default per-test limit.
WALK_TIMEOUT_S = 600


@pytest.mark.timeout(WALK_TIMEOUT_S)
def test_fuzz_as_tenant(
    api_schema: BaseSchema, fuzz_server: Server, http: requests.Session, subtests: pytest.Subtests
) -> None:
    """Every operation with the tenant's key (the admin-only ones answer 403 or 404)."""
    labels = fuzz_operations(
        api_schema,
        subtests,
        server=fuzz_server,
        key=fuzz_server.key,
        http=http,
    )
    assert "POST /v2/models/{model}/infer" in labels
    assert "POST /v1/tenants/{tenant}/keys/{prefix}/rotate" in labels


@pytest.mark.timeout(WALK_TIMEOUT_S)
def test_fuzz_as_platform_admin(
    api_schema: BaseSchema, fuzz_server: Server, http: requests.Session, subtests: pytest.Subtests
) -> None:
    """The tenancy admin API and /metrics with the platform admin key. Runs after the tenant's
    fuzzing, since it may suspend the tenant or cut its quotas."""
    labels = fuzz_operations(
        api_schema,
        subtests,
        server=fuzz_server,
        key=fuzz_server.admin_key,
        http=http,
        path_regex=r"^/v1/tenants|^/metrics$",
        extra_checks=(tenant_probe(fuzz_server),),
        after_each=lambda: reset_tenant(fuzz_server, http),
    )
    assert "PUT /v1/tenants/{tenant}/quotas" in labels
    assert "GET /metrics" in labels
