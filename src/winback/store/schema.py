"""The store's tables (SQLAlchemy Core). Migrations in ``store/migrations`` create them;
``tests/test_migrations.py`` checks that the two agree.

Conventions: every instant is :class:`UTCDateTime`; a contact is referred to by its internal
integer ``id`` (``contact_id``), the shop's own identifier is ``contacts.customer_id``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeEngine

from winback.channels import CONSENT_CHANNELS
from winback.store.types import JSONDoc, UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# BIGINT primary keys that still autoincrement on SQLite (where only INTEGER does).
BigId = BigInteger().with_variant(Integer(), "sqlite")

#: The channels with a consent column on contacts.
CHANNELS = CONSENT_CHANNELS

#: Contact columns written by the analysis (``winback analyze`` / ``models predict``), with
#: their types; ``analyzed_at`` records when. Erasure nulls them; segments on them are
#: refreshed in full; messages see them as ``analytics``.
ANALYTICS_TYPES: dict[str, TypeEngine[Any]] = {
    "rfm_r": Integer(),
    "rfm_f": Integer(),
    "rfm_m": Integer(),
    "rfm_segment": String(32),
    "p_alive": Float(),
    "expected_purchases_90d": Float(),
    "next_order_expected_at": UTCDateTime(),
    "days_overdue": Float(),
    "expected_spend": Float(),
    "clv": Float(),
    "cluster": Integer(),
    "cluster_label": String(128),
}
ANALYTICS_COLUMNS = tuple(ANALYTICS_TYPES)

contacts = Table(
    "contacts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("customer_id", String(255), nullable=False, unique=True),
    Column("email", String(320)),
    Column("phone", String(64)),
    Column("first_name", String(255)),
    Column("last_name", String(255)),
    Column("birthday", Date),
    Column("timezone", String(64)),
    Column("locale", String(35)),
    Column("created_at", UTCDateTime),
    Column("attributes", JSONDoc, nullable=False, default=dict),
    # Current consent per channel (NULL: never stated). History in consent_log.
    *(Column(f"{channel}_consent", Boolean) for channel in CONSENT_CHANNELS),
    # Standard attributes, maintained incrementally as events arrive.
    Column("last_email_opened", UTCDateTime),
    Column("last_email_link_clicked", UTCDateTime),
    Column("last_seen", UTCDateTime),
    Column("first_purchase_at", UTCDateTime),
    Column("last_purchase_at", UTCDateTime),
    Column("orders_count", Integer, nullable=False, default=0),
    Column("revenue_total", Numeric(18, 2), nullable=False, default=0),
    *(Column(name, type_) for name, type_ in ANALYTICS_TYPES.items()),
    Column("analyzed_at", UTCDateTime),
    Column("updated_at", UTCDateTime),
    # Tombstone: personal data erased (`winback contacts delete`, a flow's delete_contact step);
    # imports do not fill the contact again. History in `erasures`.
    Column("erased_at", UTCDateTime),
    Index("ix_contacts_email", "email"),
    # One SMS per number: the copy check looks up the contacts sharing a phone number.
    Index("ix_contacts_phone", "phone"),
    # The contact search by the beginning of a name.
    Index("ix_contacts_first_name", "first_name"),
    Index("ix_contacts_last_name", "last_name"),
    Index("ix_contacts_last_purchase_at", "last_purchase_at"),
    Index("ix_contacts_last_seen", "last_seen"),
    Index("ix_contacts_last_email_opened", "last_email_opened"),
    Index("ix_contacts_last_email_link_clicked", "last_email_link_clicked"),
    # Incremental segment refresh looks up the contacts changed since its last run.
    Index("ix_contacts_updated_at", "updated_at"),
)

consent_log = Table(
    "consent_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("source", String(255), nullable=False),
    Index("ix_consent_log_contact", "contact_id", "channel", "at"),
)

orders = Table(
    "orders",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", String(255), nullable=False, unique=True),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("ordered_at", UTCDateTime, nullable=False),
    Column("amount", Numeric(18, 2), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("items", JSONDoc),
    Column("coupon", String(64)),
    # paid, pending, cancelled, refunded or failed (winback.store.purchases.ORDER_STATUSES).
    Column("status", String(16), nullable=False, server_default="paid"),
    Column("refunded", Numeric(18, 2), nullable=False, server_default="0"),
    # The import that stored the row (NULL: recorded by the API); tells in-file duplicates apart.
    Column("import_id", BigInteger),
    Index("ix_orders_contact_ordered", "contact_id", "ordered_at"),
    Index("ix_orders_ordered_at", "ordered_at"),
)

#: Event types the store knows. Any other name is a custom event. Purchases live in ``orders``.
EVENT_TYPES = (
    "email_sent",
    "email_delivered",
    "email_opened",
    "email_clicked",
    "email_bounced",
    "email_complained",
    "email_unsubscribed",
    "page_view",
    "product_view",
    "cart_add",
    "feedback_submitted",
    "sales_call",
)

events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # The shop's event id, or a content hash when it gave none: re-imports add nothing.
    Column("event_key", String(255), nullable=False, unique=True),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(64), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("properties", JSONDoc),
    Column("message_id", String(255)),
    # Opens by privacy proxies and link scanners: kept, but not counted as engagement.
    Column("machine", Boolean, nullable=False, default=False),
    Column("import_id", BigInteger),
    Index("ix_events_contact_type_at", "contact_id", "type", "occurred_at"),
    Index("ix_events_type_at", "type", "occurred_at"),
    # A flow's results match its messages' events by message id; only those carry one.
    Index(
        "ix_events_message_id",
        "message_id",
        sqlite_where=Column("message_id").is_not(None),
        postgresql_where=Column("message_id").is_not(None),
    ),
)

contact_tags = Table(
    "contact_tags",
    metadata,
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(128), primary_key=True),
    Column("added_at", UTCDateTime, nullable=False),
    Column("added_by", String(255), nullable=False),
    Index("ix_contact_tags_tag", "tag"),
)

tag_history = Table(
    "tag_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("tag", String(128), nullable=False),
    Column("action", String(8), nullable=False),  # 'added' | 'removed'
    Column("at", UTCDateTime, nullable=False),
    Column("source", String(255), nullable=False),
    Index("ix_tag_history_contact", "contact_id", "at"),
    Index("ix_tag_history_tag_at", "tag", "at"),
)

imports = Table(
    "imports",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("source", Text, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("rows_read", BigInteger, nullable=False, default=0),
    Column("rows_imported", BigInteger, nullable=False, default=0),
    Column("rows_duplicate", BigInteger, nullable=False, default=0),
    Column("rows_rejected", BigInteger, nullable=False, default=0),
    Column("reject_file", Text),
)

#: Messages to deliver. The engine writes a row under a unique ``dedup_key``
#: (flow, entry, step) *before* any delivery; delivery claims due rows, checks consent again
#: and records the outcome. That key is what makes each message go out exactly once.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("dedup_key", String(255), nullable=False, unique=True),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("channel", String(16), nullable=False),  # email | sms | push | webhook | file
    Column("template", String(255)),
    Column("variant", String(64)),
    Column("flow", String(255)),
    Column("entry_id", BigInteger),
    Column("step", String(255)),
    Column("priority", String(16), nullable=False, default="marketing"),  # or transactional
    Column("payload", JSONDoc),
    # pending -> sending -> sent | failed | suppressed | skipped
    Column("status", String(16), nullable=False, default="pending"),
    Column("not_before", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("message_id", String(255)),
    Column("provider_id", String(255)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("claimed_at", UTCDateTime),
    Column("sent_at", UTCDateTime),
    Index("ix_outbox_status_due", "status", "not_before"),
    # The few transactional messages waiting, found without reading the marketing ones: a
    # claim takes them first, then the marketing ones in ix_outbox_status_due's order.
    Index(
        "ix_outbox_transactional_due",
        "status",
        "priority",
        "not_before",
        sqlite_where=(Column("status") == "pending") & (Column("priority") == "transactional"),
        postgresql_where=(Column("status") == "pending") & (Column("priority") == "transactional"),
    ),
    Index("ix_outbox_contact_channel_sent", "contact_id", "channel", "sent_at"),
    # A flow's messages per step and status (statistics, results) without the whole outbox.
    Index("ix_outbox_flow_step_status", "flow", "step", "status"),
    UniqueConstraint("message_id", name="uq_outbox_message_id"),
)

#: Segment definitions, loaded from ``segments/*.yaml`` and the shipped defaults.
segments = Table(
    "segments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("definition", JSONDoc, nullable=False),
    Column("source", Text),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("refreshed_at", UTCDateTime),
    # Current members after the last refresh (kept up to date by incremental refreshes).
    Column("member_count", BigInteger),
)

#: Materialised membership with history: one row per stint of a contact in a segment.
#: ``exited_at IS NULL`` marks current members (at most one open stint per contact and segment).
segment_membership = Table(
    "segment_membership",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("segment_id", BigId, ForeignKey("segments.id", ondelete="CASCADE"), nullable=False),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("entered_at", UTCDateTime, nullable=False),
    Column("exited_at", UTCDateTime),
    Index(
        "uq_segment_membership_open",
        "segment_id",
        "contact_id",
        unique=True,
        sqlite_where=Column("exited_at").is_(None),
        postgresql_where=Column("exited_at").is_(None),
    ),
    Index("ix_segment_membership_contact", "contact_id", "segment_id"),
    Index("ix_segment_membership_entered", "segment_id", "entered_at"),
    # Only closed stints: a refresh asks for ``exited_at > t0``; open stints need no entry.
    Index(
        "ix_segment_membership_exited",
        "segment_id",
        "exited_at",
        sqlite_where=Column("exited_at").is_not(None),
        postgresql_where=Column("exited_at").is_not(None),
    ),
)

#: Flows loaded from ``flows/*.yaml``: the definition in force, its version, whether it runs,
#: and the trigger watermark (what has been looked at already).
flows = Table(
    "flows",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("key", String(128), nullable=False, unique=True),  # file stem
    Column("name", String(255), nullable=False),
    Column("definition", JSONDoc, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("status", String(16), nullable=False, default="paused"),  # enabled | paused
    Column("watermark_id", BigInteger),
    Column("watermark_at", UTCDateTime),
    Column("enabled_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)

#: One row per stint of a contact in a flow: where it is, since when, when it next wakes.
flow_entries = Table(
    "flow_entries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("flow_id", BigId, ForeignKey("flows.id", ondelete="CASCADE"), nullable=False),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("entered_at", UTCDateTime, nullable=False),
    Column("step", String(255)),
    Column("step_at", UTCDateTime, nullable=False),
    # active -> completed (ran off the end) | exited (exit step, goal, flow_changed ...)
    Column("status", String(16), nullable=False, default="active"),
    Column("exit_reason", String(255)),
    Column("exited_at", UTCDateTime),
    Column("wake_at", UTCDateTime),
    # True while parked in a wait_for step (waiting for the event or the timeout).
    Column("waiting", Boolean, nullable=False, default=False),
    Column("holdout", Boolean, nullable=False, default=False),
    Column("branch", String(64)),
    # The entry's path so far: ``step=outcome`` tokens joined by " > " (waits not recorded).
    Column("path", Text),
    Index("ix_flow_entries_due", "flow_id", "status", "step", "wake_at"),
    Index("ix_flow_entries_contact", "contact_id", "flow_id"),
    # A flow's exits by reason and its holdout / treatment counts from the index alone.
    Index("ix_flow_entries_flow_outcome", "flow_id", "status", "exit_reason", "holdout"),
    Index(
        "uq_flow_entries_active",
        "flow_id",
        "contact_id",
        unique=True,
        sqlite_where=Column("status") == "active",
        postgresql_where=Column("status") == "active",
    ),
)

#: How many entries left each step with each outcome (``flows stats``), counted in the same
#: transaction as the moves; the path of each entry is ``flow_entries.path``.
flow_step_counts = Table(
    "flow_step_counts",
    metadata,
    Column("flow_id", BigInteger, primary_key=True, autoincrement=False),
    Column("step", String(255), primary_key=True),
    Column("outcome", String(255), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

#: RFM scores and segment of every customer at each analysis date (one snapshot per day;
#: re-running the analysis on the same day replaces it). Movement between segments is read
#: by joining two snapshots.
rfm_snapshots = Table(
    "rfm_snapshots",
    metadata,
    Column("snapshot_date", Date, primary_key=True),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("r", Integer, nullable=False),
    Column("f", Integer, nullable=False),
    Column("m", Integer, nullable=False),
    Column("segment", String(32), nullable=False),
    Index("ix_rfm_snapshots_contact", "contact_id", "snapshot_date"),
)

#: Figures of the whole base kept once per day for the dashboard's trends and pages, so that
#: no page rescans history: ``kind`` says which read model (``base``: ``winback summary``,
#: ``analysis``: the report of ``winback analyze``, ``segments``: member counts after a
#: refresh); a later snapshot of the same kind on the same day replaces it. ``data`` is
#: ``json``, not ``jsonb``, on PostgreSQL: the document keeps its keys in their order.
daily_snapshots = Table(
    "daily_snapshots",
    metadata,
    Column("snapshot_date", Date, primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("taken_at", UTCDateTime, nullable=False),
    Column("data", JSON, nullable=False),
    Index("ix_daily_snapshots_kind", "kind", "snapshot_date"),
)

# -- delivery -----------------------------------------------------------------------------------

#: Addresses that must not receive messages on a channel: unsubscribes, hard bounces,
#: complaints, manual entries. Checked at send time, next to consent.
suppressions = Table(
    "suppressions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("channel", String(16), nullable=False),
    Column("address", String(320), nullable=False),  # lower-cased email, or phone, or token
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="SET NULL")),
    Column("reason", String(32), nullable=False),  # unsubscribed | bounced | complained | manual
    Column("detail", Text),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("channel", "address"),
    Index("ix_suppressions_contact", "contact_id"),
)

#: Coupon codes: generated from a pattern or imported into a pool, assigned to one contact on
#: one message, and redeemed when an order carries the code.
coupons = Table(
    "coupons",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("pool", String(128)),  # NULL: generated from a pattern
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="SET NULL")),
    Column("outbox_id", BigId, ForeignKey("outbox.id", ondelete="SET NULL"), unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("assigned_at", UTCDateTime),
    Column("redeemed_at", UTCDateTime),
    Column("order_id", String(255)),
    Index("ix_coupons_pool_free", "pool", "assigned_at"),
    Index("ix_coupons_contact", "contact_id"),
)

#: Keys for the HTTP event API. Only a SHA-256 of the (high-entropy, random) key is kept.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    # What the key may do (winback.store.apikeys.Scope): events | read | manage.
    Column("scope", String(16), nullable=False, server_default="events"),
)

#: Provider reports (ARF complaints, DSN bounces) that could not be parsed or matched: kept
#: with the reason, never silently lost (`winback feedback-loop rejects`). One row per
#: distinct report (``digest`` = SHA-256 of its bytes), so re-importing adds nothing.
report_rejects = Table(
    "report_rejects",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("source", Text, nullable=False),  # FILE, FILE#N (mbox), or http
    Column("reason", Text, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
)

#: Audit trail of erasures (GDPR-style deletion of a contact's personal data): who or what
#: erased which contact, when and why. The contact row stays as a tombstone (``erased_at``).
erasures = Table(
    "erasures",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("source", String(255), nullable=False),  # cli | api | flow:<key>
    Column("reason", Text),
    Index("ix_erasures_contact", "contact_id"),
)

#: Shop platforms' webhooks already applied (Shopify, WooCommerce), by their delivery id:
#: written with the change itself, so a retried delivery changes nothing.
webhook_receipts = Table(
    "webhook_receipts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("platform", String(32), nullable=False),
    Column("webhook_id", String(255), nullable=False),
    Column("topic", String(64), nullable=False),
    Column("outcome", String(32), nullable=False),  # applied | ignored
    Column("received_at", UTCDateTime, nullable=False),
    UniqueConstraint("platform", "webhook_id", name="uq_webhook_receipts_delivery"),
)

#: The workspace-wide control group (winback.results.control): every contact evaluated under
#: the current ``control_group_salt`` and ``control_group_share`` (``signature``), members
#: marked. Marketing flows withhold members at enrolment.
control_group = Table(
    "control_group",
    metadata,
    Column("contact_id", BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("member", Boolean, nullable=False),
    Column("signature", String(128), nullable=False),
)

#: A flow's results as last computed (winback.results.snapshot): what the dashboard and the
#: management API show, refreshed by the engine loop every ``results_snapshot_minutes``.
results_snapshots = Table(
    "results_snapshots",
    metadata,
    Column("flow_id", BigId, ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True),
    Column("flow_version", Integer, nullable=False),
    Column("computed_at", UTCDateTime, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("delivered", BigInteger, nullable=False),
    Column("reactivated", BigInteger, nullable=False),
    #: The results as JSON text (``FlowResults.to_dict``; intervals may be NaN or infinite).
    Column("data", Text, nullable=False),
)

#: Dashboard users (winback.accounts): a name and an argon2 hash of the password.
users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("password_changed_at", UTCDateTime, nullable=False),
    Column("last_login_at", UTCDateTime),
)

#: Signed-in sessions of dashboard users, by the SHA-256 of the session token (the token
#: itself lives only in the browser's cookie). Removing a user removes the sessions.
user_sessions = Table(
    "user_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_user_sessions_user_id", "user_id"),
    Index("ix_user_sessions_expires_at", "expires_at"),
)

#: Failed sign-ins in the recent past, one row per failure and throttle key (``user:<name>``
#: or ``addr:<client address>``): what slows down password guessing, shared by every
#: process serving the store. Rows older than the throttle's window are deleted.
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("throttle_key", String(320), nullable=False),
    Column("failed_at", UTCDateTime, nullable=False),
    Index("ix_login_failures_throttle_key_failed_at", "throttle_key", "failed_at"),
    Index("ix_login_failures_failed_at", "failed_at"),
)
