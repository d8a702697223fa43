"""delivery: rejected provider reports (feedback loops, DSNs)

Revision ID: d2_delivery
Revises: d1_delivery
Create Date: 2026-11-23 05:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import winback.store.types

revision = "d2_delivery"
down_revision = "d1_delivery"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_rejects",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", winback.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_rejects")),
        sa.UniqueConstraint("digest", name=op.f("uq_report_rejects_digest")),
    )


def downgrade() -> None:
    op.drop_table("report_rejects")
