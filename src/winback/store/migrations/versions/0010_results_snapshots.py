"""results snapshots: a flow's results as last computed by the engine loop

``results_snapshots``: one row per flow (its definition's version, when and how long the
computation took, the delivered and reactivated figures of the flows list, the results as
JSON text) that the dashboard's flow pages and the management API read instead of counting
every entry, message and order of the flow on each request.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import winback.store.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "results_snapshots",
        sa.Column(
            "flow_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("flows.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("flow_version", sa.Integer(), nullable=False),
        sa.Column("computed_at", winback.store.types.UTCDateTime(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.Column("reactivated", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("results_snapshots")
