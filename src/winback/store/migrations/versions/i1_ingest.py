"""ingest: orders.import_id and events.import_id

Revision ID: i1_ingest
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i1_ingest"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("import_id", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("import_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("import_id")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("import_id")
