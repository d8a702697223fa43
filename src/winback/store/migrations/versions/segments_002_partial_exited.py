"""segments: index only closed stints by exit time

A refresh reads ``exited_at`` only as ``exited_at > t0`` (stints closed since the last
refresh), so open stints -- most rows, all of a first refresh -- need no entry there: every
stint written costs one index update less.

Revision ID: s2_segments
Revises: s1_segments
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s2_segments"
down_revision = "s1_segments"
branch_labels = None
depends_on = None

CLOSED = "exited_at IS NOT NULL"


def upgrade() -> None:
    op.drop_index("ix_segment_membership_exited", table_name="segment_membership")
    op.create_index(
        "ix_segment_membership_exited",
        "segment_membership",
        ["segment_id", "exited_at"],
        unique=False,
        sqlite_where=sa.text(CLOSED),
        postgresql_where=sa.text(CLOSED),
    )


def downgrade() -> None:
    op.drop_index("ix_segment_membership_exited", table_name="segment_membership")
    op.create_index(
        "ix_segment_membership_exited",
        "segment_membership",
        ["segment_id", "exited_at"],
        unique=False,
    )
