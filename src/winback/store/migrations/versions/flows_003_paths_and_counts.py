"""flows: the per-contact-step log becomes a path per entry (flow_entries.path) and outcome
counters per flow and step (flow_step_counts), both written by the moves themselves

Revision ID: f3_flows
Revises: f2_flows
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import winback.store.types

revision = "f3_flows"
down_revision = "f2_flows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("flow_entries", sa.Column("path", sa.Text(), nullable=True))
    op.create_table(
        "flow_step_counts",
        sa.Column("flow_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("step", sa.String(length=255), nullable=False),
        sa.Column("outcome", sa.String(length=255), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("flow_id", "step", "outcome", name=op.f("pk_flow_step_counts")),
    )
    # Carry what the log recorded over: counters, and each entry's path in log order.
    op.execute(
        "INSERT INTO flow_step_counts (flow_id, step, outcome, n) "
        "SELECT flow_id, step, outcome, count(*) FROM flow_step_log "
        "GROUP BY flow_id, step, outcome"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE flow_entries SET path = agg.path FROM (SELECT entry_id, "
            "string_agg(step || '=' || outcome, ' > ' ORDER BY id) AS path "
            "FROM flow_step_log GROUP BY entry_id) AS agg WHERE agg.entry_id = flow_entries.id"
        )
    else:
        op.execute(
            "UPDATE flow_entries SET path = agg.path FROM (SELECT entry_id, "
            "group_concat(token, ' > ') AS path FROM (SELECT entry_id, "
            "step || '=' || outcome AS token FROM flow_step_log ORDER BY entry_id, id) "
            "GROUP BY entry_id) AS agg WHERE agg.entry_id = flow_entries.id"
        )
    with op.batch_alter_table("flow_step_log", schema=None) as batch_op:
        batch_op.drop_index("ix_flow_step_log_flow_step")
    op.drop_table("flow_step_log")


def downgrade() -> None:
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
        batch_op.create_index(
            "ix_flow_step_log_flow_step", ["flow_id", "step", "outcome"], unique=False
        )
    op.drop_table("flow_step_counts")
    with op.batch_alter_table("flow_entries", schema=None) as batch_op:
        batch_op.drop_column("path")
