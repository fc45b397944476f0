"""Registering model versions: checksum, signature, config, immutable version numbers."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from modelport.errors import InvalidInput, ModelNotFound, NotFound, VersionNotFound
from modelport.serving.config import VersionConfig
from modelport.serving.runtimes import read_signature
from modelport.serving.signature import Signature
from modelport.serving.warmup import warmup_requests
from modelport.stores.artifacts import ArtifactStore
from modelport.stores.registry import ModelRecord, RegistryStore, VersionRecord
from modelport.stores.tenancy import TenancyStore

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


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


def _read_signature(source: Path, config: VersionConfig) -> Signature:
    if not source.exists():
        raise InvalidInput(f"artifact path {source} does not exist")
    return read_signature(source, config.runtime)


class RegistryService:
    def __init__(
        self, store: RegistryStore, artifacts: ArtifactStore, tenants: TenancyStore
    ) -> None:
        self._store = store
        self._artifacts = artifacts
        self._tenants = tenants

    async def push(
        self,
        tenant: str,
        name: str,
        source: Path | str,
        config: VersionConfig | None = None,
        *,
        required: bool | None = None,
        created_by: str = "cli",
    ) -> VersionRecord:
        """Store ``source`` (a local path or an fsspec URI) as the next version of ``name``.

        The signature is read from the artifact and the warmup requests are checked against it
        before anything is written, so a push that fails leaves the registry as it was."""
        check_model_name(name)
        owner = await self._tenants.get_tenant(tenant)
        if owner is None or not owner.active:
            raise NotFound(f"tenant '{tenant}' does not exist or is suspended")
        config = config or VersionConfig()
        async with self._artifacts.stage(source) as local:
            signature: Signature = await asyncio.to_thread(_read_signature, local, config)
            warmup_requests(signature, config.warmup, name)
            uri, sha256 = await asyncio.to_thread(self._artifacts.put, f"{tenant}/{name}", local)
        await self._store.ensure_model(tenant, name, required)
        return await self._store.add_version(
            tenant,
            name,
            artifact_uri=uri,
            sha256=sha256,
            signature=signature.to_dict(),
            config=config.model_dump(mode="json"),
            created_by=created_by,
        )

    async def list_models(self, tenant: str) -> list[ModelDescription]:
        return [
            ModelDescription(m, await self._store.list_versions(tenant, m.name))
            for m in await self._store.list_models(tenant)
        ]

    async def describe(self, tenant: str, name: str) -> ModelDescription:
        model = await self._store.get_model(tenant, name)
        if model is None:
            raise ModelNotFound(name)
        return ModelDescription(model, await self._store.list_versions(tenant, name))

    async def version(self, tenant: str, name: str, version: str | None = None) -> VersionRecord:
        if await self._store.get_model(tenant, name) is None:
            raise ModelNotFound(name)
        record = (
            await self._store.latest_version(tenant, name)
            if version is None
            else await self._store.get_version(tenant, name, version)
        )
        if record is None:
            raise VersionNotFound(name, version or "latest")
        return record
