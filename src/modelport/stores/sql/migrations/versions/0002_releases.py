"""releases: declared interfaces, golden examples, aliases, routing, rollouts, audit, leases,
per-replica version statistics and the release clock

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _model_fk() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("interface", sa.JSON, nullable=True))
        batch.add_column(sa.Column("golden", sa.JSON, nullable=True))
        # The highest version number ever given: a deleted number is never handed out again.
        batch.add_column(sa.Column("last_version", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "aliases",
        _model_fk(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "name"),
    )
    op.create_table(
        "routing",
        sa.Column(
            "model_id",
            sa.Integer,
            sa.ForeignKey("models.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("policy", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _model_fk(),
        sa.Column("baseline", sa.Integer, nullable=False),
        sa.Column("candidate", sa.Integer, nullable=False),
        sa.Column("plan", sa.JSON, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("snapshot", sa.JSON, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_by", sa.String(128), nullable=False),
    )
    op.create_index("ix_rollouts_model_state", "rollouts", ["model_id", "state"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("from_ref", sa.String(256), nullable=True),
        sa.Column("to_ref", sa.String(256), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", sa.JSON, nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_audit_log_tenant_model", "audit_log", ["tenant", "model", "id"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "version_stats",
        sa.Column("replica", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("latency", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("replica", "tenant", "model", "version"),
    )
    op.create_index("ix_version_stats_model", "version_stats", ["tenant", "model", "version"])
    op.create_table(
        "release_clock",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO release_clock (id, generation) VALUES (1, 0)")
    op.execute(
        "UPDATE models SET last_version = COALESCE("
        "(SELECT MAX(version) FROM model_versions WHERE model_versions.model_id = models.id), 0)"
    )


def downgrade() -> None:
    for table in (
        "release_clock",
        "version_stats",
        "leases",
        "audit_log",
        "rollouts",
        "routing",
        "aliases",
    ):
        op.drop_table(table)
    with op.batch_alter_table("models") as batch:
        batch.drop_column("last_version")
        batch.drop_column("golden")
        batch.drop_column("interface")
