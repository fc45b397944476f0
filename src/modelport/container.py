"""Wiring: every store and service a server or a CLI command needs, built explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.observability.metrics import Metrics
from modelport.services.inference import InferenceService
from modelport.services.quotas import QuotaGate, Quotas
from modelport.services.registry import RegistryService
from modelport.services.repository import RepositoryService
from modelport.services.tenancy import Authenticator, TenancyService
from modelport.serving.pool import ModelPool
from modelport.settings import Settings, read_admin_key
from modelport.stores.artifacts import ArtifactStore
from modelport.stores.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from modelport.stores.registry import RegistryStore
from modelport.stores.sql import create_engine, migrate
from modelport.stores.tenancy import TenancyStore


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    metrics: Metrics
    pool: ModelPool
    registry: RegistryService
    repository: RepositoryService
    inference: InferenceService
    tenancy: TenancyService
    authenticator: Authenticator
    quotas: QuotaGate

    async def close(self) -> None:
        await self.pool.close()
        await self.quotas.close()
        await self.engine.dispose()


async def build_services(settings: Settings) -> Services:
    url = settings.database_url.get_secret_value()
    await migrate(url)
    engine = create_engine(url)
    store = RegistryStore(engine)
    tenants = TenancyStore(engine)
    artifacts = ArtifactStore(settings.artifacts_uri, settings.cache_dir)
    metrics = Metrics()
    pool = ModelPool(artifacts, metrics)
    registry = RegistryService(store, artifacts, tenants)
    limiter: RateLimiter = (
        RedisRateLimiter(Redis.from_url(settings.redis_url.get_secret_value()))
        if settings.redis_url is not None
        else MemoryRateLimiter()
    )
    defaults = Quotas(
        rate_limit_rps=settings.tenant_rate_limit_rps,
        rate_limit_burst=settings.tenant_rate_limit_burst,
        max_concurrency=settings.tenant_max_concurrency,
        max_rows=settings.tenant_max_rows,
        max_body_bytes=settings.tenant_max_body_bytes,
    )
    return Services(
        settings=settings,
        engine=engine,
        metrics=metrics,
        pool=pool,
        registry=registry,
        repository=RepositoryService(store, registry, pool),
        inference=InferenceService(pool, store, settings.request_timeout_ms / 1000.0),
        tenancy=TenancyService(tenants),
        authenticator=Authenticator(
            tenants,
            read_admin_key(settings),
            settings.auth_cache_ttl_s,
            defaults=defaults,
            open_as_tenant=None if settings.auth_enabled else settings.default_tenant,
        ),
        quotas=QuotaGate(limiter),
    )
