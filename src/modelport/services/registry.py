"""Registering model versions: checksum, signature, config, immutable version numbers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import Conflict, InvalidInput, ModelNotFound, NotFound
from modelport.serving.config import VersionConfig
from modelport.serving.contract import (
    GoldenExample,
    golden_failures,
    incompatibilities,
    parse_golden,
)
from modelport.serving.features import (
    FeatureJoin,
    FeatureJoinRuntime,
    ViewGetter,
    build_join,
    referenced_views,
    request_signature,
)
from modelport.serving.runtimes import Runtime, load_runtime, read_signature
from modelport.serving.signature import Signature
from modelport.serving.warmup import warmup_requests
from modelport.stores.artifacts import ArtifactStore
from modelport.stores.audit import AuditLog, Change
from modelport.stores.online import OnlineStore
from modelport.stores.registry import ModelRecord, RegistryStore, VersionRecord
from modelport.stores.tenancy import TenancyStore

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

#: Given ``(tenant, model)``, what else still depends on the model (e.g. "experiment 'x'"):
#: a model is not deleted while any check names something. A rollout in progress is checked
#: by the store itself, in the deleting transaction.
DependentsCheck = Callable[[str, str], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class ModelDescription:
    model: ModelRecord
    versions: list[VersionRecord]


def check_model_name(name: str) -> None:
    if not _NAME.match(name):
        raise InvalidInput(
            f"model name {name!r} is not allowed: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )


def _run_examples(
    path: Path,
    config: VersionConfig,
    examples: list[GoldenExample],
    join: FeatureJoin | None = None,
) -> list[dict[str, np.ndarray]]:
    """Each golden example through a runtime loaded just for this (blocking: run in a thread);
    a feature-joined model reads its features from the online store as it would serving."""
    runtime: Runtime = load_runtime(path, config.runtime)
    if join is not None and config.features is not None:
        served = request_signature(runtime.signature, config.features)
        runtime = FeatureJoinRuntime(runtime, join, served, "golden examples")
    try:
        return [runtime.predict(example.inputs) for example in examples]
    finally:
        runtime.close()


def _read_signature(source: Path, config: VersionConfig) -> Signature:
    if not source.exists():
        raise InvalidInput(f"artifact path {source} does not exist")
    return read_signature(source, config.runtime)


class RegistryService:
    def __init__(
        self,
        store: RegistryStore,
        artifacts: ArtifactStore,
        tenants: TenancyStore,
        audit: AuditLog | None = None,
        *,
        feature_views: ViewGetter | None = None,
        online_store: OnlineStore | None = None,
        dependents: Sequence[DependentsCheck] = (),
    ) -> None:
        """``dependents``: the checks of whatever may refer to a model from outside it
        (experiments register theirs here; a model whose feature join reads another model's
        output would too). Nothing of the kind exists yet, so the server passes none."""
        self._store = store
        self._artifacts = artifacts
        self._tenants = tenants
        self._audit = audit
        self._views = feature_views
        self._online = online_store
        self._dependents = tuple(dependents)

    async def push(
        self,
        tenant: str,
        name: str,
        source: Path | str,
        config: VersionConfig | None = None,
        *,
        required: bool | None = None,
        created_by: str = "cli",
        breaking: bool = False,
    ) -> VersionRecord:
        """Store ``source`` (a local path or an fsspec URI) as the next version of ``name``.

        The signature is read from the artifact and the warmup requests are checked against it
        before anything is written, so a push that fails leaves the registry as it was. The
        signature must stay compatible with the model's declared interface (unless ``breaking``,
        which makes it the new interface), and the model's golden examples must pass on it."""
        check_model_name(name)
        owner = await self._tenants.get_tenant(tenant)
        if owner is None or not owner.active:
            raise NotFound(f"tenant '{tenant}' does not exist or is suspended")
        config = config or VersionConfig()
        existing = await self._store.get_model(tenant, name)
        checks: dict[str, Any] = {"breaking": breaking}
        async with self._artifacts.stage(source) as local:
            signature: Signature = await asyncio.to_thread(_read_signature, local, config)
            join: FeatureJoin | None = None
            if config.features is not None:
                config, signature, join = await self._join_features(tenant, config, signature)
            warmup_requests(signature, config.warmup, name)
            if existing is not None and existing.interface is not None and not breaking:
                problems = incompatibilities(Signature.from_dict(existing.interface), signature)
                if problems:
                    raise Conflict(
                        f"the new version of model '{name}' breaks its interface: "
                        f"{'; '.join(problems)}. Push it as a breaking change (--breaking) "
                        "to make this the new interface"
                    )
            if existing is not None and existing.golden and not breaking:
                examples = parse_golden(signature, existing.golden, name)
                outputs = await asyncio.to_thread(_run_examples, local, config, examples, join)
                failures = golden_failures(examples, outputs)
                if failures:
                    raise Conflict(
                        f"the new version of model '{name}' fails its golden examples: "
                        f"{'; '.join(failures)}"
                    )
                checks["golden_passed"] = len(examples)
            uri, sha256 = await asyncio.to_thread(self._artifacts.put, f"{tenant}/{name}", local)
        model = await self._store.ensure_model(tenant, name, required)
        if model.interface is None or breaking:
            await self._store.set_interface(tenant, name, signature.to_dict())
            if breaking and model.golden:
                # The examples describe the old interface; they go with it.
                await self._store.set_golden(tenant, name, None)
                checks["golden_cleared"] = True
        record = await self._store.add_version(
            tenant,
            name,
            artifact_uri=uri,
            sha256=sha256,
            signature=signature.to_dict(),
            config=config.model_dump(mode="json"),
            created_by=created_by,
        )
        if self._audit is not None:
            await self._audit.record(
                tenant,
                name,
                Change(
                    "version_pushed",
                    created_by,
                    "breaking change" if breaking else "",
                    None,
                    record.version,
                    {"sha256": sha256, **checks},
                ),
            )
        return record

    async def _join_features(
        self, tenant: str, config: VersionConfig, signature: Signature
    ) -> tuple[VersionConfig, Signature, FeatureJoin]:
        """Check a feature-joined version against the views as they are now, record their
        versions with it, and give the signature callers will use (entity keys instead of the
        feature-filled inputs)."""
        features = config.features
        if features is None or self._views is None or self._online is None:
            raise InvalidInput(
                "this version joins features; the registry has no online feature store"
            )
        views = {}
        for view_name in referenced_views(features):
            view = await self._views(tenant, view_name, None)
            if view is None:
                raise InvalidInput(
                    f"feature view '{view_name}' does not exist; apply it first "
                    "(modelport features apply)"
                )
            views[view_name] = view
        join = FeatureJoin(features, views, self._online)
        served = request_signature(signature, features)
        pinned = features.model_copy(
            update={"view_versions": {n: v.version for n, v in views.items()}}
        )
        return config.model_copy(update={"features": pinned}), served, join

    async def set_golden(
        self, tenant: str, name: str, examples: list[dict[str, Any]] | None, actor: str
    ) -> int:
        """Store golden examples after checking them against the model's interface and, when
        the model has versions, running them on the newest one (examples that today's model
        does not reproduce would block every push)."""
        model = await self._store.get_model(tenant, name)
        if model is None:
            raise ModelNotFound(name)
        if examples:
            if model.interface is None:
                raise Conflict(f"model '{name}' has no interface yet; push a version first")
            parsed = parse_golden(Signature.from_dict(model.interface), examples, name)
            latest = await self._store.latest_version(tenant, name)
            if latest is not None:
                config = VersionConfig.model_validate(latest.config)
                path = await asyncio.to_thread(
                    self._artifacts.materialise, latest.artifact_uri, latest.sha256
                )
                join = None
                if config.features is not None and self._views and self._online:
                    join = await build_join(tenant, config.features, self._views, self._online)
                outputs = await asyncio.to_thread(_run_examples, path, config, parsed, join)
                failures = golden_failures(parsed, outputs)
                if failures:
                    raise InvalidInput(
                        f"version {latest.version} of model '{name}' does not reproduce these "
                        f"golden examples: {'; '.join(failures)}"
                    )
        await self._store.set_golden(tenant, name, examples or None)
        if self._audit is not None:
            await self._audit.record(
                tenant,
                name,
                Change("golden_changed", actor, "", details={"examples": len(examples or [])}),
            )
        return len(examples or [])

    async def delete_model(
        self, tenant: str, name: str, actor: str, reason: str = ""
    ) -> list[VersionRecord]:
        """Delete a model with its versions, aliases, routing and rollouts (audited, and
        announced to every replica, which unloads it), then the artifacts no other version
        uses. Refused while something depends on it: a rollout in progress, or whatever a
        dependents check names. Returns the deleted versions."""
        if await self._store.get_model(tenant, name) is None:
            raise ModelNotFound(name)
        refuse: list[str] = []
        for check in self._dependents:
            refuse.extend(await check(tenant, name))
        deleted = await self._store.delete_model(tenant, name, actor, reason, refuse=refuse)
        for uri in sorted({v.artifact_uri for v in deleted}):
            if not await self._store.artifact_in_use(uri):
                await asyncio.to_thread(self._artifacts.delete, uri)
        return deleted

    async def list_models(self, tenant: str) -> list[ModelDescription]:
        """Every model of the tenant with its versions, in a fixed number of queries."""
        return [
            ModelDescription(model, versions)
            for model, versions in await self._store.models_with_versions(tenant)
        ]

    async def describe(self, tenant: str, name: str) -> ModelDescription:
        model = await self._store.get_model(tenant, name)
        if model is None:
            raise ModelNotFound(name)
        return ModelDescription(model, await self._store.list_versions(tenant, name))

    async def version(self, tenant: str, name: str, version: str | None = None) -> VersionRecord:
        """The given version of a model, or its newest; ``ModelNotFound`` or
        ``VersionNotFound`` otherwise (see ``RegistryStore.resolve_version``)."""
        return await self._store.resolve_version(tenant, name, version)
