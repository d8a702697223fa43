"""delivery: partial index of the transactional messages waiting in the outbox

Revision ID: d3_delivery
Revises: d2_delivery
Create Date: 2026-11-23 08:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "d3_delivery"
down_revision = "d2_delivery"
branch_labels = None
depends_on = None

_WHERE = sa.text("status = 'pending' AND priority = 'transactional'")


def upgrade() -> None:
    op.create_index(
        "ix_outbox_transactional_due",
        "outbox",
        ["status", "priority", "not_before"],
        unique=False,
        sqlite_where=_WHERE,
        postgresql_where=_WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_transactional_due", table_name="outbox")
