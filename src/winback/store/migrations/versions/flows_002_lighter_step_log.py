"""flows: drop the per-entry index of flow_step_log (written for every contact-step, read
only per flow and step)

Revision ID: f2_flows
Revises: f1_flows
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "f2_flows"
down_revision = "f1_flows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flow_step_log", schema=None) as batch_op:
        batch_op.drop_index("ix_flow_step_log_entry")


def downgrade() -> None:
    with op.batch_alter_table("flow_step_log", schema=None) as batch_op:
        batch_op.create_index("ix_flow_step_log_entry", ["entry_id"], unique=False)
