"""Typed settings, read from ``MODELPORT_*`` environment variables (or a ``.env`` file).

Nothing reads settings at import time: ``Settings()`` is built once by the caller (the CLI or a
test) and handed to ``create_app``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: What a product's search text is made of: the catalog fields the indexes read.
SEARCH_FIELDS = ("title", "brand", "category", "attributes", "description")


class SearchTenantConfig(BaseModel):
    """One tenant's departures from the ``search_*`` defaults (``MODELPORT_SEARCH_TENANTS``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    embedding_model: str | None = None
    fields: dict[str, float] | None = None
    rrf_k: float | None = Field(default=None, gt=0)
    rerank_model: str | None = None
    rerank_depth: int | None = Field(default=None, ge=1, le=1000)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPORT_", env_file=".env", extra="ignore")

    database_url: SecretStr = SecretStr("sqlite+aiosqlite:///var/modelport.db")
    """SQLAlchemy URL of the registry. SQLite by default; ``postgresql://…`` in production.
    A secret because it may carry a password."""

    artifacts_uri: str = "var/artifacts"
    """Where pushed artifacts are kept: a local path or an fsspec URI (``file://``, ``s3://``)."""

    cache_dir: Path = Path("var/cache")
    """Local folder where remote artifacts are materialised before loading."""

    host: str = "127.0.0.1"
    """Interface the HTTP server binds."""

    port: int = Field(default=8080, ge=0, le=65535)
    """TCP port of the HTTP server."""

    max_request_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    """Largest accepted request body; larger bodies get 413 before they are read whole."""

    request_timeout_ms: float = Field(default=30_000, gt=0)
    """Default deadline of an inference request; a request still queued past it is not run."""

    load_models_on_start: bool = True
    """Load the newest version of every registered model when the server starts."""

    log_level: str = "INFO"
    """Minimum level of the JSON log lines written to stdout."""

    access_log: bool = False
    """Write one log line per HTTP request. Errors are always logged, with their request id."""

    admin_key: SecretStr | None = None
    """Platform bootstrap key: manages tenants and their keys. Give it as a secret, or as
    ``MODELPORT_ADMIN_KEY_FILE``; there is no default."""

    admin_key_file: Path | None = None
    """File holding the platform bootstrap key (e.g. a mounted Kubernetes secret)."""

    auth_enabled: bool = True
    """Require an API key on every endpoint but health and server metadata. Turning it off
    serves everything as tenant ``default_tenant`` with every scope: for local experiments only."""

    default_tenant: str = "default"
    """The tenant every request acts in when ``auth_enabled`` is false."""

    auth_cache_ttl_s: float = Field(default=1.0, gt=0, le=60)
    """How long a key lookup is cached; a revoked key stops working within this time."""

    redis_url: SecretStr | None = None
    """Redis for state shared by replicas (rate limits, the shared response cache tier, online
    features). Unset: in-process state."""

    cache_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    """Memory the in-process response cache may hold (answers of versions with
    ``cache.enabled``); the least recently used answers make room. 0: no memory tier."""

    cache_redis_timeout_ms: float = Field(default=50.0, gt=0, le=10_000)
    """Socket timeout of the Redis response cache tier. A slower answer counts as a failure,
    after which Redis is skipped (requests compute) for a back-off of 1 s growing to 10 s."""

    tenant_rate_limit_rps: float = Field(default=0.0, ge=0)
    """Default requests per second per tenant (0: unlimited); per-tenant quotas override it."""

    tenant_rate_limit_burst: int = Field(default=0, ge=0)
    """Default token-bucket size (0: twice the rate)."""

    rate_limit_lease_ms: float = Field(default=50.0, gt=0, le=10_000)
    """With Redis: each replica leases a tenant's tokens in batches of about this much of its
    own traffic (at most this much of the tenant's rate) and spends them without a Redis call.
    Larger means fewer Redis calls and a looser bound (docs/operations.md, "Rate limits")."""

    rate_limit_timeout_ms: float = Field(default=100.0, gt=0, le=10_000)
    """With Redis: the longest a request waits for a lease of rate-limit tokens. A slower
    answer, or an error, lets requests through unchecked (logged) for 1 s."""

    tenant_max_concurrency: int = Field(default=256, ge=0)
    """Default in-flight inference requests per tenant per replica (0: unlimited)."""

    tenant_max_rows: int = Field(default=0, ge=0)
    """Default rows per inference request (0: only the model's max_batch_size applies)."""

    tenant_max_body_bytes: int = Field(default=0, ge=0)
    """Default request body limit per tenant (0: MODELPORT_MAX_REQUEST_BYTES)."""

    max_header_bytes: int = Field(default=16 * 1024, gt=0)
    """Largest total size of a request's headers; larger requests get 431."""

    max_inflight_body_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    """Request bodies this replica holds in memory at once, all tenants together; a body that
    would pass it is refused with 503 and Retry-After."""

    tenant_max_inflight_body_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    """Request bodies one tenant may have in memory at once on this replica; beyond it, 429."""

    header_timeout_s: float = Field(default=10.0, gt=0, le=600)
    """``modelport serve``: a connection must send a request's whole headers within this long
    (from its first byte, or from connecting); slower ones are closed."""

    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """``modelport serve``: the longest a request body may take to arrive after its headers; a
    slower sender is cut off."""

    cors_origins: list[str] = Field(default_factory=list)
    """Browser origins allowed to call the API (CORS). Empty: CORS is off."""

    release_sync_interval_s: float = Field(default=1.0, gt=0, le=60)
    """How often a replica checks the release state (aliases, routing, rollouts) in the
    database. On PostgreSQL a change also arrives at once through LISTEN/NOTIFY; the poll heals a
    missed notice."""

    rollout_guard_interval_s: float = Field(default=1.0, gt=0, le=60)
    """How often the rollout guard judges running rollouts and each replica publishes its
    per-version request statistics."""

    rollout_guard_lease_s: float = Field(default=5.0, gt=0, le=300)
    """Lease on the guard's role; if its holder stops renewing, another replica takes over
    after this long."""

    shadow_max_inflight: int = Field(default=64, ge=0)
    """Most mirrored (shadow) requests running at once per replica; beyond it, mirrors are
    dropped and counted, so shadowing cannot queue up behind live traffic."""

    feature_store_timeout_s: float = Field(default=0.5, gt=0, le=30)
    """Connect and read timeout of the online feature store's Redis calls (one immediate retry);
    a Redis slower than this fails the call with 503 instead of holding the request."""

    feature_key_prefix: str = Field(default="mp:f", min_length=1, max_length=64)
    """Prefix of the online feature store's Redis keys: ``{prefix}:{tenant}:{view}:{entity}``."""

    feature_expired_grace_s: float = Field(default=3600.0, ge=0, le=30 * 86_400)
    """How long past its view's TTL a value is kept, reading as ``expired`` rather than
    ``missing`` (its Redis key lives until event time + TTL + this)."""

    feature_push_max_rows: int = Field(default=10_000, ge=1, le=10_000)
    """Most rows one feature push may carry; more is refused with 413."""

    feature_push_max_values: int = Field(default=1_000_000, ge=1)
    """Most feature values (rows x features per row) one push may carry; more is refused with
    413, so a push of 10,000 rows of a 1,000-feature view is refused unless allowed here."""

    feature_max_string_chars: int = Field(default=4096, ge=1, le=65_536)
    """Longest string feature value a push may carry, in characters; longer is refused with 413."""

    feature_tenant_max_bytes: int | None = Field(default=1 << 30, ge=1)
    """Most bytes of online feature values one tenant may store (per record: its entity key
    and its values as JSON), on either backend; a push past it is refused with 409 and stores
    nothing (on Redis, a push of over 1,000 rows keeps the 1,000-row chunks written before the
    refusal). Values leave the count when they pass their view's TTL and grace period. Unset
    (empty): no cap."""

    stream_key_prefix: str = Field(default="mp:s", min_length=1, max_length=64)
    """Prefix of the event pipeline's Redis keys: ``{prefix}:{topic}`` (a topic's stream) and
    ``{prefix}:dead-letters:{tenant}``. Without Redis the stream lives in the SQL database."""

    stream_poll_s: float = Field(default=1.0, gt=0, le=10)
    """How often a reader of the embedded (SQL) stream looks for messages published by another
    process; a publish in the same process wakes it at once. Each look is a query on the event
    loop's database: polling 20 times a second cost an idle server 5 % of a core."""

    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    """Most outbox rows the relay publishes to the stream in one round."""

    relay_interval_s: float = Field(default=1.0, gt=0, le=60)
    """How long the relay waits after finding the outbox empty (a change committed in this
    process wakes it at once)."""

    relay_lease_s: float = Field(default=10.0, gt=0, le=300)
    """Lease on the relay's role: one replica publishes the outbox at a time, in commit order;
    if its holder stops renewing, another replica takes over after this long."""

    idempotency_ttl_s: float = Field(default=86_400.0, gt=0, le=7 * 86_400)
    """How long the answer to a POST with an ``Idempotency-Key`` is kept and replayed; after
    it the key may be used again for a new request."""

    idempotency_stale_s: float = Field(default=300.0, gt=0)
    """A request with an ``Idempotency-Key`` that has not answered after this long (its server
    died) no longer blocks the key: the next request with it runs."""

    catalog_import_chunk: int = Field(default=500, ge=1, le=10_000)
    """Lines of a catalog import written per SQL transaction (each line still succeeds or
    fails alone)."""

    event_retention_days: float = Field(default=90.0, gt=0, le=3650)
    """How long raw events (``POST /v1/events``) are kept, by when they were received; older
    ones are purged in bounded chunks. An event id retried after this is accepted again."""

    event_max_age_s: float = Field(default=7 * 86_400.0, gt=0, le=3650 * 86_400)
    """Oldest event timestamp accepted, in seconds before the server's clock; older: rejected."""

    event_max_future_s: float = Field(default=600.0, ge=0, le=86_400)
    """Newest event timestamp accepted, in seconds ahead of the server's clock (client clock
    skew); further ahead: rejected."""

    event_recent_items: int = Field(default=20, ge=1, le=200)
    """How many item ids the ``user_recent`` feature view keeps per user and event type."""

    event_popularity_half_life_s: float = Field(default=86_400.0, gt=0, le=365 * 86_400)
    """Half-life of the time decay of ``item_popularity`` (views, carts, purchases)."""

    event_session_window_s: float = Field(default=1800.0, gt=0, le=7 * 86_400)
    """Two items count as co-viewed (co-purchased) when one session saw both within this."""

    event_cooccurrence_top: int = Field(default=50, ge=1, le=500)
    """How many co-occurring items ``item_cooccurrence`` keeps per item (the highest counts)."""

    experiment_cache_ttl_s: float = Field(default=1.0, ge=0, le=60)
    """How long a replica serves from its copy of a tenant's running experiments: a start or a
    stop made on another replica takes effect there within this."""

    experiment_guardrail_interval_s: float = Field(default=10.0, ge=0, le=3600)
    """Each running experiment's guardrail is checked at most this often (after exposures
    are written; reading its results checks it too)."""

    workers_in_process: bool | None = None
    """Run the stream consumers (features, catalog) inside the server process. Unset: on
    without Redis (the embedded default), off with Redis, where ``modelport worker``
    processes run them."""

    worker_concurrency: int = Field(default=4, ge=1, le=256)
    """Consumer batches a worker applies at the same time, all consumers together."""

    worker_batch_size: int = Field(default=100, ge=1, le=10_000)
    """Most messages a consumer reads and applies in one batch."""

    worker_max_attempts: int = Field(default=5, ge=1, le=100)
    """Tries of a message (deliveries and retries together) before it goes to its group's
    dead letters with its last error (``modelport events dlq``)."""

    worker_backoff_base_s: float = Field(default=0.1, ge=0, le=60)
    """Wait after a message's first failed try; each further failure doubles the ceiling, and
    the wait is drawn at random below it (full jitter)."""

    worker_backoff_max_s: float = Field(default=30.0, ge=0, le=3600)
    """Ceiling of the wait between two tries of a message."""

    worker_claim_idle_s: float = Field(default=30.0, gt=0, le=86_400)
    """A message pending this long with a worker that neither acknowledged it nor gave it up
    (the worker died) is taken over by another worker."""

    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    """``modelport worker`` serves its Prometheus metrics on this port (0: not served)."""

    search_index: bool = True
    """Keep every tenant's search indexes in this server and answer ``POST /v1/search``. The
    indexes follow the catalog stream in each replica (``docs/search.md``)."""

    search_embedding_model: str = "minilm"
    """The tenant's text-embedding model (served by this server) that embeds products and
    queries; a tenant without it is searched lexically only."""

    search_fields: dict[str, float] = Field(
        default_factory=lambda: {
            "title": 3.0,
            "brand": 2.0,
            "category": 1.5,
            "attributes": 1.0,
            "description": 1.0,
        }
    )
    """Weight of each product field in the search text (of title, brand, category,
    attributes, description; 0 or absent leaves a field out). BM25 scores each field on its
    own and sums them times these weights; the embedded text puts the fields in descending
    weight order, so what weighs most survives the model's token limit."""

    search_rrf_k: float = Field(default=60.0, gt=0)
    """The constant of reciprocal rank fusion: a hit at rank r (1-based) of a retriever adds
    1 / (k + r). Larger k flattens the difference between the top ranks (60 is the value of
    Cormack et al., 2009); a request may set its own."""

    search_candidates: int = Field(default=100, ge=10, le=1000)
    """How many hits each retriever hands to fusion (and facet counts), at least the page."""

    search_rerank_model: str | None = None
    """A model served by this server that re-scores the fused top hits (none by default);
    its input is a float matrix of retrieval features (``docs/search.md``)."""

    search_rerank_depth: int = Field(default=50, ge=1, le=1000)
    """How many of the fused hits the rerank model re-scores."""

    search_tenants: dict[str, SearchTenantConfig] = Field(default_factory=dict)
    """Per tenant departures from the defaults above, as JSON: ``{"acme": {"fields":
    {"title": 4, "description": 1}, "rrf_k": 20, "rerank_model": "ranker"}}``."""

    search_max_document_chars: int = Field(default=4000, ge=100, le=1_000_000)
    """A product's search text is cut to this many characters before it is embedded (the
    model reads up to its own token limit: ``max_sequence_length`` of the version)."""

    search_query_cache_size: int = Field(default=10_000, ge=0, le=10_000_000)
    """Query embeddings kept per server (all tenants together, least recently used out)."""

    search_query_cache_ttl_s: float = Field(default=600.0, gt=0)
    """How long a cached query embedding is used."""

    search_index_batch: int = Field(default=256, ge=1, le=10_000)
    """Catalog messages the indexer applies at once."""

    search_snapshot_interval_s: float = Field(default=300.0, ge=0)
    """How often a replica writes its indexes to the snapshot store when they changed
    (0: never). A replica that starts restores the newest snapshot and replays the stream."""

    search_snapshots_uri: str | None = None
    """Where snapshots go (a path or fsspec URI); unset: ``{artifacts_uri}/search-snapshots``."""

    search_snapshots_kept: int = Field(default=3, ge=1, le=100)
    """How many snapshots are kept (older ones are deleted after a new one is written)."""

    server_name: str = "modelport"
    """Name reported by ``GET /v2``."""


def read_admin_key(settings: Settings) -> str | None:
    """The bootstrap key from ``MODELPORT_ADMIN_KEY`` or the file ``MODELPORT_ADMIN_KEY_FILE``."""
    if settings.admin_key is not None and settings.admin_key.get_secret_value().strip():
        return settings.admin_key.get_secret_value().strip()
    if settings.admin_key_file is not None:
        return settings.admin_key_file.read_text().strip() or None
    return None
