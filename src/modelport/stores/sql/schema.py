"""Tables of the registry. Changes go through an Alembic revision under ``migrations/``."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Quotas; NULL means the server's default (MODELPORT_TENANT_*).
    Column("rate_limit_rps", Float, nullable=True),
    Column("rate_limit_burst", Integer, nullable=True),
    Column("max_concurrency", Integer, nullable=True),
    Column("max_rows", Integer, nullable=True),
    Column("max_body_bytes", Integer, nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), ForeignKey("tenants.name", ondelete="CASCADE"), nullable=False),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), ForeignKey("tenants.name", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("required", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The declared interface (a signature) new versions must stay compatible with.
    Column("interface", JSON, nullable=True),
    # Golden examples every new version must reproduce before it may receive traffic.
    Column("golden", JSON, nullable=True),
    # The highest version number ever given: a deleted number is never handed out again.
    Column("last_version", Integer, nullable=False, server_default="0"),
    UniqueConstraint("tenant", "name", name="uq_models_tenant_name"),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("artifact_uri", String(1024), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("signature", JSON, nullable=False),
    Column("config", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False, default="cli"),
    UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
)


def _model_fk() -> Column[int]:
    return Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False)


aliases = Table(
    "aliases",
    metadata,
    _model_fk(),
    Column("name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(128), nullable=False),
    PrimaryKeyConstraint("model_id", "name"),
)

routing = Table(
    "routing",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("policy", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(128), nullable=False),
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _model_fk(),
    Column("baseline", Integer, nullable=False),
    Column("candidate", Integer, nullable=False),
    Column("plan", JSON, nullable=False),
    Column("step", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    # Summed statistics of both versions when the current step started.
    Column("snapshot", JSON, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("step_started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("started_by", String(128), nullable=False),
    # The rollout guard's latest verdict (action, reason, figures, at); ``reason`` stays why
    # the rollout was started.
    Column("verdict", JSON, nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("from_ref", String(256), nullable=True),
    Column("to_ref", String(256), nullable=True),
    Column("reason", Text, nullable=False),
    Column("details", JSON, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Cumulative per replica process: rows only grow, so sums over replicas only grow.
version_stats = Table(
    "version_stats",
    metadata,
    Column("replica", String(64), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("latency", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("replica", "tenant", "model", "version"),
)

# One row; every release change bumps it, so a replica polls one integer to know it is current.
release_clock = Table(
    "release_clock",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("generation", BigInteger, nullable=False),
)

# Feature views: immutable versions of a definition; applying an unchanged one adds nothing.
feature_views = Table(
    "feature_views",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("entity", String(64), nullable=False),
    # [{"name", "dtype", "default"}, …] in the view's order.
    Column("features", JSON, nullable=False),
    Column("ttl_s", Float, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
    UniqueConstraint("tenant", "name", "version", name="uq_feature_views_tenant_name_version"),
)

# Latest values per entity of the embedded online store (memory, persisted here on write).
online_features = Table(
    "online_features",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("view", String(64), nullable=False),
    Column("entity_key", String(512), nullable=False),
    Column("values", JSON, nullable=False),
    Column("event_ts", Float, nullable=False),
    # event_ts + the view's TTL + the grace period: past it the row reads as missing.
    Column("expires_at", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("tenant", "view", "entity_key"),
)

# ----------------------------------------------------------------- the event pipeline
# Revision 0005 (stream tables), 0006 (catalog), 0007 (events): see ``stores/outbox.py``,
# ``stores/streams*.py``, ``stores/catalog.py``, ``stores/events.py``.

outbox = Table(
    "outbox",
    metadata,
    # Written in the same transaction as the change it announces; the relay publishes the
    # rows to the stream in id order and deletes them.
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant", String(64), nullable=False),
    Column("topic", String(32), nullable=False),
    Column("key", String(256), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

stream_messages = Table(
    "stream_messages",
    metadata,
    # The embedded stream (no Redis): messages in publish order, per topic.
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("topic", String(32), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("key", String(256), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=False),
    Index("ix_stream_messages_topic_id", "topic", "id"),
)

stream_groups = Table(
    "stream_groups",
    metadata,
    # A consumer group's position in a topic of the embedded stream.
    Column("topic", String(32), nullable=False),
    Column("group_name", String(64), nullable=False),
    Column("last_id", BigInteger, nullable=False),
    PrimaryKeyConstraint("topic", "group_name"),
)

stream_pending = Table(
    "stream_pending",
    metadata,
    # Delivered and not yet acknowledged: which consumer holds it, since when, how often tried.
    Column("topic", String(32), nullable=False),
    Column("group_name", String(64), nullable=False),
    Column("message_id", BigInteger, nullable=False),
    Column("consumer", String(128), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False),
    PrimaryKeyConstraint("topic", "group_name", "message_id"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    # Messages a consumer group gave up on after its attempts, with the last error.
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("topic", String(32), nullable=False),
    Column("group_name", String(64), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("key", String(256), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("error", Text, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False),
    Index("ix_dead_letters_tenant", "tenant", "topic", "group_name"),
)

processed_messages = Table(
    "processed_messages",
    metadata,
    # Exactly-once effects written to SQL: a message's key is recorded in the transaction that
    # applies it, so a redelivery after a crash finds it and applies nothing.
    Column("group_name", String(64), nullable=False),
    Column("key", String(256), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("group_name", "key"),
    # Keys older than any redelivery are purged by age.
    Index("ix_processed_messages_at", "processed_at"),
)

catalog_products = Table(
    "catalog_products",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("id", String(128), nullable=False),
    Column("title", String(1024), nullable=False),
    Column("description", Text, nullable=False),
    Column("brand", String(256), nullable=True),
    # Category path, levels joined by " > "; filtered by prefix.
    Column("category", String(1024), nullable=False),
    Column("attributes", JSON, nullable=False),
    # Minor units (cents), in ``currency``.
    Column("price_amount", BigInteger, nullable=True),
    Column("currency", String(3), nullable=True),
    Column("availability", String(16), nullable=False),
    Column("images", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("tenant", "id"),
    Index("ix_catalog_products_updated", "tenant", "updated_at", "id"),
    Index("ix_catalog_products_category", "tenant", "category"),
    Index("ix_catalog_products_brand", "tenant", "brand"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # Stripe-style Idempotency-Key: the first answer to (tenant, key) is kept and replayed.
    Column("tenant", String(64), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("status", Integer, nullable=True),
    Column("response", LargeBinary, nullable=True),
    Column("headers", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("tenant", "key"),
    Index("ix_idempotency_keys_created", "created_at"),
)

events = Table(
    "events",
    metadata,
    # Raw behavioural events as accepted, kept for MODELPORT_EVENT_RETENTION_DAYS.
    Column("tenant", String(64), nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("type", String(32), nullable=False),
    Column("user_id", String(128), nullable=True),
    Column("session_id", String(128), nullable=True),
    Column("item_ids", JSON, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("request_id", String(128), nullable=True),
    Column("properties", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("tenant", "event_id"),
    # Retention purges by received_at across tenants; export reads a tenant's time range.
    Index("ix_events_received", "received_at"),
    Index("ix_events_occurred", "tenant", "occurred_at", "event_id"),
    # Experiment analysis attributes clicks and purchases to answers (revision 0008).
    Index("ix_events_request", "tenant", "request_id"),
)

event_feature_state = Table(
    "event_feature_state",
    metadata,
    # What the built-in feature consumers aggregate per entity (a user's recent items, an
    # item's decayed popularity or co-occurrences, a session's items), updated in the same
    # transaction as processed_messages; the online store holds a projection of it.
    Column("tenant", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("entity_key", String(256), nullable=False),
    Column("state", JSON, nullable=False),
    # Increases on every update (epoch seconds): the projection's event time, so the newest
    # state wins in the online store whichever worker writes last.
    Column("version", Float, nullable=False),
    PrimaryKeyConstraint("tenant", "kind", "entity_key"),
    Index("ix_event_feature_state_version", "kind", "version"),
)

# ----------------------------------------------------------------- experiments
# Revision 0008: see ``stores/experiments.py``.

experiments = Table(
    "experiments",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    # What it covers: "inference:<model>", "search" or "recommendations:<kind>".
    Column("surface", String(200), nullable=False),
    # "user", "session" or "custom" (then unit_key names the key the caller passes).
    Column("unit", String(16), nullable=False),
    Column("unit_key", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    # A new run (new variants or weights) takes a new salt: units are assigned afresh and
    # the analysis counts only the current run.
    Column("run", Integer, nullable=False),
    Column("salt", String(128), nullable=False),
    Column("variants", JSON, nullable=False),
    Column("control", String(64), nullable=False),
    Column("layer", String(64), nullable=True),
    Column("layer_start", Integer, nullable=False),
    Column("layer_end", Integer, nullable=False),
    Column("guardrail", JSON, nullable=True),
    Column("history", JSON, nullable=False),
    # Every write checks and bumps it: a guardrail stop and an edit never overwrite each other.
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("tenant", "id"),
    Index("ix_experiments_surface", "tenant", "surface", "status"),
)

experiment_exposures = Table(
    "experiment_exposures",
    metadata,
    # One row per answer served under an experiment, written in group commits off the
    # request path; clicks and purchases join through request_id (``events.request_id``).
    Column("tenant", String(64), nullable=False),
    Column("experiment_id", String(64), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("run", Integer, nullable=False),
    Column("variant", String(64), nullable=False),
    Column("unit", String(128), nullable=False),
    # "ok" or "error": what the covered surface answered; latency_ms when it was measured.
    Column("outcome", String(8), nullable=False),
    Column("latency_ms", Float, nullable=True),
    Column("exposed_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("tenant", "experiment_id", "request_id"),
    Index("ix_experiment_exposures_run", "tenant", "experiment_id", "run", "variant"),
)
