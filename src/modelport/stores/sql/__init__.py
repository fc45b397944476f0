"""The SQL store: one schema for SQLite (embedded default) and PostgreSQL (production)."""

from modelport.stores.sql.engine import create_engine, migrate, normalise_url

__all__ = ["create_engine", "migrate", "normalise_url"]
