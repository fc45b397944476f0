"""Registering model versions: checksum, signature, config, immutable version numbers."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from modelport.errors import InvalidInput, ModelNotFound, VersionNotFound
from modelport.serving.config import VersionConfig
from modelport.serving.runtimes import read_signature
from modelport.serving.signature import Signature
from modelport.serving.warmup import warmup_requests
from modelport.stores.artifacts import ArtifactStore
from modelport.stores.registry import ModelRecord, RegistryStore, VersionRecord

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
    def __init__(self, store: RegistryStore, artifacts: ArtifactStore) -> None:
        self._store = store
        self._artifacts = artifacts

    async def push(
        self,
        name: str,
        source: Path,
        config: VersionConfig | None = None,
        *,
        required: bool | None = None,
        created_by: str = "cli",
    ) -> VersionRecord:
        """Store ``source`` as the next version of ``name``.

        The signature is read from the artifact and the warmup requests are checked against it
        before anything is written, so a push that fails leaves the registry as it was."""
        check_model_name(name)
        config = config or VersionConfig()
        signature: Signature = await asyncio.to_thread(_read_signature, source, config)
        warmup_requests(signature, config.warmup, name)
        uri, sha256 = await asyncio.to_thread(self._artifacts.put, name, source)
        await self._store.ensure_model(name, required)
        return await self._store.add_version(
            name,
            artifact_uri=uri,
            sha256=sha256,
            signature=signature.to_dict(),
            config=config.model_dump(mode="json"),
            created_by=created_by,
        )

    async def list_models(self) -> list[ModelDescription]:
        return [
            ModelDescription(m, await self._store.list_versions(m.name))
            for m in await self._store.list_models()
        ]

    async def describe(self, name: str) -> ModelDescription:
        model = await self._store.get_model(name)
        if model is None:
            raise ModelNotFound(name)
        return ModelDescription(model, await self._store.list_versions(name))

    async def version(self, name: str, version: str | None = None) -> VersionRecord:
        if await self._store.get_model(name) is None:
            raise ModelNotFound(name)
        record = (
            await self._store.latest_version(name)
            if version is None
            else await self._store.get_version(name, version)
        )
        if record is None:
            raise VersionNotFound(name, version or "latest")
        return record
