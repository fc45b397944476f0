"""experiments: definitions with their history, exposures served under them, and the index
that attributes events to the answers they came from

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("surface", sa.String(200), nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("unit_key", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("salt", sa.String(128), nullable=False),
        sa.Column("variants", sa.JSON, nullable=False),
        sa.Column("control", sa.String(64), nullable=False),
        sa.Column("layer", sa.String(64), nullable=True),
        sa.Column("layer_start", sa.Integer, nullable=False),
        sa.Column("layer_end", sa.Integer, nullable=False),
        sa.Column("guardrail", sa.JSON, nullable=True),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "id"),
    )
    op.create_index("ix_experiments_surface", "experiments", ["tenant", "surface", "status"])
    op.create_table(
        "experiment_exposures",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("experiment_id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("variant", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("exposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "experiment_id", "request_id"),
    )
    op.create_index(
        "ix_experiment_exposures_run",
        "experiment_exposures",
        ["tenant", "experiment_id", "run", "variant"],
    )
    op.create_index("ix_events_request", "events", ["tenant", "request_id"])


def downgrade() -> None:
    op.drop_index("ix_events_request", "events")
    op.drop_index("ix_experiment_exposures_run", "experiment_exposures")
    op.drop_table("experiment_exposures")
    op.drop_index("ix_experiments_surface", "experiments")
    op.drop_table("experiments")
