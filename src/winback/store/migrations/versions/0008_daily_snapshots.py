"""daily_snapshots: the dashboard's figures of the whole base, one row per day and kind

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import winback.store.types

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daily_snapshots",
        sa.Column("snapshot_date", sa.Date(), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("taken_at", winback.store.types.UTCDateTime(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index("ix_daily_snapshots_kind", "daily_snapshots", ["kind", "snapshot_date"])


def downgrade() -> None:
    op.drop_index("ix_daily_snapshots_kind", table_name="daily_snapshots")
    op.drop_table("daily_snapshots")
