"""``POST /v2/models/{m}[/versions/{v}]/infer`` as a bare ASGI handler.

This is the hot path, so it skips the framework's routing, dependency injection and response
classes, not the edge: it uses the same pieces as every other route (``read_head``,
``Gate``, the body budget and its readers, ``error_response``, ``add_common_headers``,
``log_access``). Before the body is read it knows the caller, its scope and rate, and which
model will serve the call, so a body larger than anything that model takes (or one for a model
that does not exist) is refused unread. Two request headers steer routing: ``X-Model-Alias``
pins an alias (like ``{model}@{alias}`` in the path) and ``X-Routing-Key`` gives the sticky
routing key. ``X-Experiment-Unit`` names the caller's experiment unit: when a running experiment
covers ``inference:{model}`` and the call names neither a version nor an alias, the unit's
variant picks the model target, the answer says which (``x-experiment``,
``x-experiment-variant``) and the exposure is recorded. The OpenAPI document describes the route
(``api.openapi``).
"""

from __future__ import annotations

import time

import structlog
from starlette.types import Receive, Scope, Send

from modelport.api.access import INFER
from modelport.api.bodies import BodyBudget, BodyPermit, inflate, read_rest, whole_body
from modelport.api.cors import CorsPolicy
from modelport.api.errors import error_response
from modelport.api.gate import Gate
from modelport.api.request_head import read_head
from modelport.api.responses import CLOSE, add_common_headers, log_access
from modelport.errors import ModelportError
from modelport.services.experiments import Assignment, ExperimentService
from modelport.services.inference import InferenceService
from modelport.services.quotas import QuotaGate
from modelport.serving.codec import encode_response, parse_body

log = structlog.get_logger("modelport.http")

_JSON = b"application/json"
_OCTET = b"application/octet-stream"


def match_infer_path(path: str) -> tuple[str, str | None] | None:
    """``(model, version)`` when ``path`` is an OIP infer URL, else None."""
    if not path.startswith("/v2/models/") or not path.endswith("/infer") or not path.isprintable():
        return None
    parts = path.split("/")
    if len(parts) == 5 and parts[3]:
        return parts[3], None
    if len(parts) == 7 and parts[4] == "versions" and parts[3] and parts[5]:
        return parts[3], parts[5]
    return None


class InferEndpoint:
    def __init__(
        self,
        inference: InferenceService,
        gate: Gate,
        quotas: QuotaGate,
        budget: BodyBudget,
        cors: CorsPolicy,
        *,
        max_request_bytes: int,
        max_header_bytes: int,
        access_log: bool,
        experiments: ExperimentService | None = None,
    ) -> None:
        self._inference = inference
        self._gate = gate
        self._quotas = quotas
        self._budget = budget
        self._cors = cors
        self._max = max_request_bytes
        self._max_headers = max_header_bytes
        self._access_log = access_log
        self._experiments = experiments

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        model: str,
        version: str | None,
    ) -> None:
        head = read_head(scope["headers"], self._max_headers)
        status = 200
        headers: list[tuple[bytes, bytes]] = []
        permit: BodyPermit | None = None
        read = False
        assignment: Assignment | None = None
        alias = head.alias
        started = 0.0
        tenant = ""
        try:
            if head.problem is not None:
                raise head.problem
            caller = self._gate.known(head, INFER)
            if caller is None:
                caller = await self._gate.admit(head, INFER)
            assert caller is not None and caller.tenant is not None  # noqa: S101 - INFER scope
            tenant = caller.tenant
            quotas = caller.quotas
            if head.experiment_unit and version is None and alias is None:
                assignment = await self._assign(tenant, model, head.experiment_unit)
                if assignment is not None:
                    started = time.perf_counter()
                    target = assignment.target
                    model = str(target.get("model") or model)
                    version, alias = target.get("version"), target.get("alias")
            limit, reason = self._limit(tenant, quotas.max_body_bytes, model, version, alias)
            if not limit:
                # No version here answers for the target: say why before reading the body.
                await self._inference.check_target(tenant, model, version, alias)
                limit, reason = self._max, "MODELPORT_MAX_REQUEST_BYTES"
            permit = self._budget.permit(tenant, limit, reason, head.content_length)
            self._quotas.enter(tenant, quotas)
            try:
                message = await receive()
                body = whole_body(message, permit, self._budget)
                if body is None:
                    body = await read_rest(message, receive, permit, self._budget)
                if body is None:
                    return  # the client went away, or was cut off for sending too slowly
                read = True
                if head.encoding:
                    body = inflate(body, head.encoding, permit)
                doc, binary = parse_body(body, head.header_length)
                result = await self._inference.infer_document(
                    tenant,
                    model,
                    version,
                    doc,
                    binary,
                    alias=alias,
                    routing_key=head.routing_key,
                    max_rows=quotas.max_rows,
                )
            finally:
                self._quotas.leave(tenant)
            payload, json_length = encode_response(
                result.model, result.version, result.outputs, result.id
            )
            if json_length is None:
                headers.append((b"content-type", _JSON))
            else:
                headers.append((b"content-type", _OCTET))
                headers.append((b"inference-header-content-length", str(json_length).encode()))
            headers.append((b"x-model-version", result.version.encode()))
            if result.cache is not None:
                headers.append((b"x-cache", result.cache.encode()))
        except Exception as exc:
            status, headers, payload = error_response(exc)
            if not read and head.content_length != 0:
                # Refused unread: close rather than take in a body nobody will look at.
                headers.append(CLOSE)
            if isinstance(exc, ModelportError):
                log.warning(
                    "infer_failed",
                    request_id=head.request_id.decode(),
                    model=model,
                    version=version,
                    status=status,
                    error=exc.message,
                )
            else:
                log.error(
                    "infer_crashed",
                    request_id=head.request_id.decode(),
                    model=model,
                    version=version,
                    exc_info=exc,
                )
        finally:
            if permit is not None:
                self._budget.release(permit)
        if assignment is not None and self._experiments is not None:
            headers.append((b"x-experiment", assignment.experiment_id.encode()))
            headers.append((b"x-experiment-variant", assignment.variant.encode()))
            self._experiments.expose(
                tenant,
                assignment,
                head.request_id.decode(),
                outcome="error" if status >= 500 else "ok",
                latency_ms=(time.perf_counter() - started) * 1000.0,
            )
        add_common_headers(headers, head.request_id, self._cors, head.origin)
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        if self._access_log:
            log_access(head.request_id, "POST", scope["path"], status)

    async def _assign(self, tenant: str, model: str, unit: str) -> Assignment | None:
        """The caller's variant in the experiment covering this model, if one runs; an
        experiment store that cannot answer serves the call as if none ran (logged)."""
        if self._experiments is None:
            return None
        try:
            return await self._experiments.assign(tenant, "inference:" + model, unit)
        except Exception as exc:  # noqa: BLE001 - serving goes on without the experiment
            log.warning("experiment_assignment_failed", model=model, error=str(exc))
            return None

    def _limit(
        self, tenant: str, tenant_max: int, model: str, version: str | None, alias: str | None
    ) -> tuple[int, str]:
        """The body cap of this call and what sets it; 0 when no version here serves it."""
        model_max = self._inference.body_limit(tenant, model, version, alias)
        if not model_max:
            return 0, ""
        limit, reason = self._max, "MODELPORT_MAX_REQUEST_BYTES"
        if tenant_max and tenant_max < limit:
            limit, reason = tenant_max, f"tenant '{tenant}''s max_body_bytes"
        if model_max < limit:
            limit = model_max
            reason = f"the most model '{model}' takes: max_batch_size rows of its inputs"
        return limit, reason
