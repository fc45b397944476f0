"""Wiring: every store and service a server or a CLI command needs, built explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from modelport.errors import FeatureViewNotFound
from modelport.observability.metrics import Metrics
from modelport.routing.table import RouteTable
from modelport.services.cache import ResponseCache
from modelport.services.catalog import CatalogService
from modelport.services.event_features import EventFeatureConfig, EventFeatures
from modelport.services.events import EventLimits, EventService
from modelport.services.experiments import ExperimentService
from modelport.services.features import FeatureService, PushLimits
from modelport.services.inference import InferenceService
from modelport.services.quotas import QuotaGate, Quotas
from modelport.services.registry import RegistryService
from modelport.services.relay import Relay
from modelport.services.release_follower import ReleaseFollower
from modelport.services.releases import ReleaseService
from modelport.services.repository import RepositoryService
from modelport.services.rollout_guard import RolloutGuard
from modelport.services.search import SearchService
from modelport.services.search_documents import SearchConfigs
from modelport.services.search_embeddings import Embedder
from modelport.services.search_indexer import SearchIndexer
from modelport.services.shadow import ShadowRunner
from modelport.services.tenancy import Authenticator, TenancyService
from modelport.serving.config import FeaturesConfig
from modelport.serving.features import FeatureJoin, build_join
from modelport.serving.pool import ModelPool
from modelport.settings import SEARCH_FIELDS, Settings, read_admin_key
from modelport.stores.artifacts import ArtifactStore
from modelport.stores.cache import MemoryCacheTier, RedisCacheTier
from modelport.stores.catalog import CatalogStore
from modelport.stores.event_features import FeatureStateStore
from modelport.stores.events import EventStore
from modelport.stores.experiments import ExperimentStore, ExposureStore
from modelport.stores.features import FeatureViewStore
from modelport.stores.idempotency import IdempotencyKeys
from modelport.stores.leases import LeaseStore
from modelport.stores.online import FeatureView, OnlineStore
from modelport.stores.online_memory import MemoryOnlineStore
from modelport.stores.online_redis import RedisOnlineStore
from modelport.stores.outbox import Outbox
from modelport.stores.ratelimit import MemoryRateLimiter, RateLimiter
from modelport.stores.ratelimit_redis import RedisRateLimiter
from modelport.stores.registry import RegistryStore
from modelport.stores.releases import ReleaseStore
from modelport.stores.search_indexes import SearchIndexes
from modelport.stores.search_snapshots import SnapshotStore
from modelport.stores.sql import create_engine, migrate
from modelport.stores.streams import Stream
from modelport.stores.streams_redis import RedisStream
from modelport.stores.streams_sql import SqlStream
from modelport.stores.tenancy import TenancyStore


@dataclass(slots=True, kw_only=True)
class Services:
    """What transports (HTTP routes, CLI commands) call: services only. The pool and the
    stores behind them are private, kept here to be closed."""

    settings: Settings
    metrics: Metrics
    registry: RegistryService
    repository: RepositoryService
    inference: InferenceService
    tenancy: TenancyService
    authenticator: Authenticator
    quotas: QuotaGate
    releases: ReleaseService
    shadow: ShadowRunner
    features: FeatureService
    stream: Stream
    """The event pipeline's stream (Redis Streams with Redis, else the SQL database)."""
    events: EventService
    event_features: EventFeatures
    """What the built-in feature consumer (``workers.features``) applies events with."""
    catalog: CatalogService
    experiments: ExperimentService
    """Experiments: definitions, assignment, exposures (written off the request path), results."""
    idempotency: IdempotencyKeys
    """Answers of POSTs with an Idempotency-Key (``api.idempotency``)."""
    _engine: AsyncEngine
    _pool: ModelPool
    _cache: ResponseCache
    _online_store: OnlineStore
    sync: ReleaseFollower | None = None
    """Follows the release state (servers only)."""
    guard: RolloutGuard | None = None
    """Publishes statistics and judges rollouts (servers only)."""
    relay: Relay | None = None
    """Publishes the outbox to the stream (servers only)."""
    search: SearchService | None = None
    """``/v1/search`` (servers with ``MODELPORT_SEARCH_INDEX``)."""
    search_indexer: SearchIndexer | None = None
    """This replica's search indexes, following the catalog stream (servers only)."""

    async def start_release_workers(self) -> None:
        """Install the current release state (loading what it needs), then follow it."""
        if self.sync is not None:
            await self.sync.start()
        if self.guard is not None:
            self.guard.start()

    def start_pipeline(self) -> None:
        """Start relaying committed changes (the outbox) to the stream."""
        if self.relay is not None:
            self.relay.start()

    def start_search(self) -> None:
        """Restore or build the search indexes, then follow the catalog stream (needs the
        embedding models loaded: it retries until they are)."""
        if self.search_indexer is not None:
            self.search_indexer.start()

    async def close(self) -> None:
        if self.search_indexer is not None:
            await self.search_indexer.close()
        if self.relay is not None:
            await self.relay.close()
        if self.guard is not None:
            await self.guard.close()
        if self.sync is not None:
            await self.sync.close()
        await self.shadow.close()
        await self.experiments.close()
        await self._pool.close()
        await self._cache.close()
        await self._online_store.close()
        await self.quotas.close()
        await self.stream.close()
        await self.events.close()
        await self._engine.dispose()


async def build_services(settings: Settings, *, server: bool = False) -> Services:
    """Everything a command needs; ``server`` adds what follows and acts on the release state
    (a CLI command only reads and writes it)."""
    url = settings.database_url.get_secret_value()
    await migrate(url)
    engine = create_engine(url)
    store = RegistryStore(engine)
    tenants = TenancyStore(engine)
    artifacts = ArtifactStore(settings.artifacts_uri, settings.cache_dir)
    metrics = Metrics()
    online_store: OnlineStore = (
        RedisOnlineStore.from_url(
            settings.redis_url.get_secret_value(),
            timeout_s=settings.feature_store_timeout_s,
            prefix=settings.feature_key_prefix,
            grace_s=settings.feature_expired_grace_s,
            max_tenant_bytes=settings.feature_tenant_max_bytes,
        )
        if settings.redis_url is not None
        else MemoryOnlineStore(
            engine,
            grace_s=settings.feature_expired_grace_s,
            max_tenant_bytes=settings.feature_tenant_max_bytes,
        )
    )
    if server:
        # A CLI command loads the embedded store lazily, on its first feature read or write.
        await online_store.load()
    features = FeatureService(
        FeatureViewStore(engine),
        online_store,
        limits=PushLimits(
            rows=settings.feature_push_max_rows,
            values=settings.feature_push_max_values,
            string_chars=settings.feature_max_string_chars,
        ),
    )

    async def view_or_none(tenant: str, name: str, version: int | None) -> FeatureView | None:
        try:
            return await features.views.get(tenant, name, version)
        except FeatureViewNotFound:
            return None

    async def feature_join(tenant: str, config: FeaturesConfig) -> FeatureJoin:
        return await build_join(
            tenant,
            config,
            view_or_none,
            online_store,
            metrics.feature_store_errors.labels(tenant).inc,
        )

    pool = ModelPool(artifacts, metrics, feature_join)
    release_store = ReleaseStore(engine)
    registry = RegistryService(
        store,
        artifacts,
        tenants,
        release_store.audit,
        feature_views=view_or_none,
        online_store=online_store,
    )
    routes = RouteTable()
    shadow = ShadowRunner(pool, metrics, max_inflight=settings.shadow_max_inflight)
    sync = (
        ReleaseFollower(
            release_store,
            store,
            pool,
            routes,
            database_url=url,
            interval_s=settings.release_sync_interval_s,
            metrics=metrics,
        )
        if server
        else None
    )
    releases = ReleaseService(release_store, store, pool, sync)
    guard = (
        RolloutGuard(
            release_store,
            releases,
            pool,
            interval_s=settings.rollout_guard_interval_s,
            lease_ttl_s=settings.rollout_guard_lease_s,
            metrics=metrics,
        )
        if server
        else None
    )
    stream: Stream = (
        RedisStream.from_url(
            settings.redis_url.get_secret_value(), prefix=settings.stream_key_prefix
        )
        if settings.redis_url is not None
        else SqlStream(engine, poll_s=settings.stream_poll_s)
    )
    event_store = EventStore(engine)
    relay = (
        Relay(
            Outbox(engine),
            stream,
            batch_size=settings.relay_batch_size,
            interval_s=settings.relay_interval_s,
            leases=LeaseStore(engine),
            lease_ttl_s=settings.relay_lease_s,
            remove=event_store.remove_outbox,
        )
        if server
        else None
    )
    # The relay publishes accepted events from memory as they commit; the event store's
    # writer deletes their outbox rows in its next transaction.
    event_store.listener = relay
    limiter: RateLimiter = (
        RedisRateLimiter(
            Redis.from_url(
                settings.redis_url.get_secret_value(),
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
            ),
            lease_s=settings.rate_limit_lease_ms / 1000.0,
            timeout_s=settings.rate_limit_timeout_ms / 1000.0,
        )
        if settings.redis_url is not None
        else MemoryRateLimiter()
    )
    cache = ResponseCache(
        MemoryCacheTier(settings.cache_max_bytes),
        None
        if settings.redis_url is None
        else RedisCacheTier.from_url(
            settings.redis_url.get_secret_value(),
            timeout_s=settings.cache_redis_timeout_ms / 1000.0,
        ),
        metrics,
    )
    inference = InferenceService(
        pool,
        store,
        settings.request_timeout_ms / 1000.0,
        routes=routes,
        shadow=shadow,
        cache=cache,
    )
    catalog_store = CatalogStore(engine, on_commit=None if relay is None else relay.nudge)
    search, search_indexer = _search(settings, inference, catalog_store, stream, server)
    defaults = Quotas(
        rate_limit_rps=settings.tenant_rate_limit_rps,
        rate_limit_burst=settings.tenant_rate_limit_burst,
        max_concurrency=settings.tenant_max_concurrency,
        max_rows=settings.tenant_max_rows,
        max_body_bytes=settings.tenant_max_body_bytes,
    )
    return Services(
        settings=settings,
        metrics=metrics,
        registry=registry,
        repository=RepositoryService(store, registry, pool, sync),
        inference=inference,
        tenancy=TenancyService(tenants),
        authenticator=Authenticator(
            tenants,
            read_admin_key(settings),
            settings.auth_cache_ttl_s,
            defaults=defaults,
            open_as_tenant=None if settings.auth_enabled else settings.default_tenant,
        ),
        quotas=QuotaGate(limiter),
        releases=releases,
        shadow=shadow,
        features=features,
        stream=stream,
        events=EventService(
            event_store,
            EventLimits(
                max_age_s=settings.event_max_age_s,
                max_future_s=settings.event_max_future_s,
                retention_days=settings.event_retention_days,
            ),
        ),
        event_features=EventFeatures(
            FeatureStateStore(engine),
            features,
            EventFeatureConfig(
                recent_items=settings.event_recent_items,
                half_life_s=settings.event_popularity_half_life_s,
                session_window_s=settings.event_session_window_s,
                cooccurrence_top=settings.event_cooccurrence_top,
            ),
        ),
        catalog=CatalogService(catalog_store, chunk=settings.catalog_import_chunk),
        experiments=ExperimentService(
            ExperimentStore(engine),
            ExposureStore(engine),
            cache_ttl_s=settings.experiment_cache_ttl_s,
            guardrail_interval_s=settings.experiment_guardrail_interval_s,
        ),
        idempotency=IdempotencyKeys(
            engine, ttl_s=settings.idempotency_ttl_s, stale_s=settings.idempotency_stale_s
        ),
        _engine=engine,
        _pool=pool,
        _cache=cache,
        _online_store=online_store,
        sync=sync,
        guard=guard,
        relay=relay,
        search=search,
        search_indexer=search_indexer,
    )


def _search(
    settings: Settings,
    inference: InferenceService,
    catalog: CatalogStore,
    stream: Stream,
    server: bool,
) -> tuple[SearchService | None, SearchIndexer | None]:
    if not (server and settings.search_index):
        return None, None
    configs = SearchConfigs(settings)
    embedder = Embedder(
        inference,
        cache_size=settings.search_query_cache_size,
        ttl_s=settings.search_query_cache_ttl_s,
    )
    snapshots_uri = settings.search_snapshots_uri or (
        settings.artifacts_uri.rstrip("/") + "/search-snapshots"
    )
    indexer = SearchIndexer(
        SearchIndexes(dim=384, fields=dict.fromkeys(SEARCH_FIELDS, 1.0)),
        stream,
        catalog,
        embedder,
        configs,
        snapshots=SnapshotStore(snapshots_uri),
        batch_size=settings.search_index_batch,
        max_chars=settings.search_max_document_chars,
        snapshot_interval_s=settings.search_snapshot_interval_s,
        snapshots_kept=settings.search_snapshots_kept,
    )
    service = SearchService(
        indexer,
        embedder,
        inference,
        catalog,
        configs,
        candidates=settings.search_candidates,
    )
    return service, indexer
