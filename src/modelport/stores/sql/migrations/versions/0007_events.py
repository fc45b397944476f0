"""events: raw behavioural events as accepted, for retention and export; the feature
consumers' aggregates per entity

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("session_id", sa.String(128), nullable=True),
        sa.Column("item_ids", sa.JSON, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("properties", sa.JSON, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "event_id"),
    )
    op.create_index("ix_events_received", "events", ["received_at"])
    op.create_index("ix_events_occurred", "events", ["tenant", "occurred_at", "event_id"])
    op.create_table(
        "event_feature_state",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("entity_key", sa.String(256), nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("version", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant", "kind", "entity_key"),
    )
    op.create_index("ix_event_feature_state_version", "event_feature_state", ["kind", "version"])


def downgrade() -> None:
    op.drop_index("ix_event_feature_state_version", "event_feature_state")
    op.drop_table("event_feature_state")
    op.drop_index("ix_events_occurred", "events")
    op.drop_index("ix_events_received", "events")
    op.drop_table("events")
