"""webhook_receipts: the shop platforms' webhooks already applied

One row per webhook delivery id (``X-Shopify-Webhook-Id``, ``X-WC-Webhook-Delivery-ID``),
written in the transaction that applies the webhook: a retried delivery finds its row and
changes nothing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import winback.store.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_receipts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("webhook_id", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("received_at", winback.store.types.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("platform", "webhook_id", name="uq_webhook_receipts_delivery"),
    )


def downgrade() -> None:
    op.drop_table("webhook_receipts")
