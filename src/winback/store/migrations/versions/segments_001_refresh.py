"""segments: index for incremental refresh, member count

Revision ID: s1_segments
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "s1_segments"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index("ix_contacts_updated_at", ["updated_at"], unique=False)
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("member_count", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.drop_column("member_count")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_updated_at")
