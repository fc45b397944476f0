"""Tables of the registry. Changes go through an Alembic revision under ``migrations/``."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
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
