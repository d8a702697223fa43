"""orders: status and refunded amount

Every stored order is a paid purchase with nothing refunded until an import or webhook says
otherwise; only counted purchases (status ``paid``, refunded less than the amount) feed the
contacts' purchase attributes, RFM, the models, segments and revenue.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="paid"))
        batch.add_column(
            sa.Column("refunded", sa.Numeric(18, 2), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("refunded")
        batch.drop_column("status")
