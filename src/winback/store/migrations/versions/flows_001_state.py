"""flows: definitions, entries and step log

Revision ID: f1_flows
Revises: 0002
Create Date: 2026-11-23 02:55:31.055245
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import winback.store.types

revision = "f1_flows"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flow_step_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("flow_id", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("step", sa.String(length=255), nullable=False),
        sa.Column("at", winback.store.types.UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_step_log")),
    )
    with op.batch_alter_table("flow_step_log", schema=None) as batch_op:
        batch_op.create_index("ix_flow_step_log_entry", ["entry_id"], unique=False)
        batch_op.create_index(
            "ix_flow_step_log_flow_step", ["flow_id", "step", "outcome"], unique=False
        )

    op.create_table(
        "flows",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column(
            "definition",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("watermark_id", sa.BigInteger(), nullable=True),
        sa.Column("watermark_at", winback.store.types.UTCDateTime(), nullable=True),
        sa.Column("enabled_at", winback.store.types.UTCDateTime(), nullable=True),
        sa.Column("updated_at", winback.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flows")),
        sa.UniqueConstraint("key", name=op.f("uq_flows_key")),
    )
    op.create_table(
        "flow_entries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("flow_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("entered_at", winback.store.types.UTCDateTime(), nullable=False),
        sa.Column("step", sa.String(length=255), nullable=True),
        sa.Column("step_at", winback.store.types.UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("exit_reason", sa.String(length=255), nullable=True),
        sa.Column("exited_at", winback.store.types.UTCDateTime(), nullable=True),
        sa.Column("wake_at", winback.store.types.UTCDateTime(), nullable=True),
        sa.Column("waiting", sa.Boolean(), nullable=False),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("branch", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_flow_entries_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["flow_id"],
            ["flows.id"],
            name=op.f("fk_flow_entries_flow_id_flows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_entries")),
    )
    with op.batch_alter_table("flow_entries", schema=None) as batch_op:
        batch_op.create_index("ix_flow_entries_contact", ["contact_id", "flow_id"], unique=False)
        batch_op.create_index(
            "ix_flow_entries_due", ["flow_id", "status", "step", "wake_at"], unique=False
        )
        batch_op.create_index(
            "uq_flow_entries_active",
            ["flow_id", "contact_id"],
            unique=True,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("flow_entries", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_flow_entries_active",
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )
        batch_op.drop_index("ix_flow_entries_due")
        batch_op.drop_index("ix_flow_entries_contact")

    op.drop_table("flow_entries")
    op.drop_table("flows")
    with op.batch_alter_table("flow_step_log", schema=None) as batch_op:
        batch_op.drop_index("ix_flow_step_log_flow_step")
        batch_op.drop_index("ix_flow_step_log_entry")

    op.drop_table("flow_step_log")
