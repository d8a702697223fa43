"""analytics rfm snapshots

Revision ID: a1_analytics
Revises: 0002
Create Date: 2026-11-23 02:55:54.810672
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a1_analytics"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rfm_snapshots",
        sa.Column("snapshot_date", sa.Date(), nullable=False),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("r", sa.Integer(), nullable=False),
        sa.Column("f", sa.Integer(), nullable=False),
        sa.Column("m", sa.Integer(), nullable=False),
        sa.Column("segment", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_rfm_snapshots_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_date", "contact_id", name=op.f("pk_rfm_snapshots")),
    )
    with op.batch_alter_table("rfm_snapshots", schema=None) as batch_op:
        batch_op.create_index(
            "ix_rfm_snapshots_contact", ["contact_id", "snapshot_date"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("rfm_snapshots", schema=None) as batch_op:
        batch_op.drop_index("ix_rfm_snapshots_contact")

    op.drop_table("rfm_snapshots")
