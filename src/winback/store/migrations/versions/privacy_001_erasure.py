"""privacy: contacts.erased_at tombstone and the erasures audit trail

Revision ID: p1_privacy
Revises: 0002
Create Date: 2026-11-23 05:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import winback.store.types

revision = "p1_privacy"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "contacts", sa.Column("erased_at", winback.store.types.UTCDateTime(), nullable=True)
    )
    op.create_table(
        "erasures",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "contact_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("at", winback.store.types.UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_erasures_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
    )
    op.create_index("ix_erasures_contact", "erasures", ["contact_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_erasures_contact", table_name="erasures")
    op.drop_table("erasures")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("erased_at")
