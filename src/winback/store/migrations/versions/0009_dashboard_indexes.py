"""dashboard indexes: a flow's messages, entries and message events

- ``events (message_id) WHERE message_id IS NOT NULL``: a flow's results match its messages'
  opens, clicks, bounces and complaints by message id. Only the events of winback's own
  messages carry one, so the index is small and page views or imported events do not touch it.
- ``outbox (flow, step, status)``: a flow's messages per step and status (its statistics,
  the flows list), and the flow's messages in its results, without reading the whole outbox.
- ``flow_entries (flow_id, status, exit_reason, holdout)``: a flow's exits by reason and its
  holdout and treatment counts, read from the index alone.
- ``contacts (first_name)`` and ``contacts (last_name)``: the contact search by the beginning
  of a name (the dashboard's Contacts page).
- ``contacts (phone)``: the contacts sharing a phone number (one SMS per number, the copy
  check of each delivery batch).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

HAS_MESSAGE = "message_id IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_events_message_id",
        "events",
        ["message_id"],
        sqlite_where=sa.text(HAS_MESSAGE),
        postgresql_where=sa.text(HAS_MESSAGE),
    )
    op.create_index("ix_outbox_flow_step_status", "outbox", ["flow", "step", "status"])
    op.create_index(
        "ix_flow_entries_flow_outcome",
        "flow_entries",
        ["flow_id", "status", "exit_reason", "holdout"],
    )
    op.create_index("ix_contacts_first_name", "contacts", ["first_name"])
    op.create_index("ix_contacts_last_name", "contacts", ["last_name"])
    op.create_index("ix_contacts_phone", "contacts", ["phone"])


def downgrade() -> None:
    op.drop_index("ix_contacts_phone", table_name="contacts")
    op.drop_index("ix_contacts_last_name", table_name="contacts")
    op.drop_index("ix_contacts_first_name", table_name="contacts")
    op.drop_index("ix_flow_entries_flow_outcome", table_name="flow_entries")
    op.drop_index("ix_outbox_flow_step_status", table_name="outbox")
    op.drop_index("ix_events_message_id", table_name="events")
