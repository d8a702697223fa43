"""merge the per-area migration branches into one head

Each area (analytics, delivery, flows, ingest, privacy, segments) grew its own branch from
0002; this revision joins them, so that the store has one head again: ``alembic heads``
names one revision, ``downgrade -1`` means something, and the next migration simply
follows this one.

Revision ID: 0003
Revises: a1_analytics, d3_delivery, f3_flows, i1_ingest, p1_privacy, s2_segments
Create Date: 2026-11-23 08:50:00
"""

from __future__ import annotations

revision = "0003"
down_revision = (
    "a1_analytics",
    "d3_delivery",
    "f3_flows",
    "i1_ingest",
    "p1_privacy",
    "s2_segments",
)
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
