"""Mailchimp: a campaign's email activity and unsubscribes, and an audience export.

Activity: one row per action of the Marketing API's ``GET /reports/{campaign_id}/
email-activity`` (each member's ``activity`` items with the member's fields):
``email_address``, ``action`` (``open``, ``click``, ``bounce``: the only three the API
names), ``timestamp`` (ISO 8601), ``url`` (clicks), ``type`` (bounces: ``hard`` or
``soft``), ``campaign_id``; spreadsheet spellings (``Email Address``, ``Action``...) are
read too. Unsubscribes are another report, ``GET /reports/{campaign_id}/unsubscribed``:
``email_address``, ``timestamp``, ``reason``, ``campaign_id`` and no ``action``; its rows
are unsubscribes. Audience export (Audience > All contacts > Export audience, a ZIP of one CSV file per
status: subscribed, unsubscribed, cleaned): ``Email Address``, the merge fields (``First
Name``, ``Last Name``, ``Phone Number``...) and system columns (``MEMBER_RATING``,
``OPTIN_TIME``, ... ``LEID``, ``EUID``, ``NOTES``, ``TAGS``); the subscribed file grants
email consent, the unsubscribed and cleaned files (with ``UNSUB_TIME`` / ``CLEAN_TIME``)
revoke it, and a file named ``nonsubscribed...`` (contacts who never opted in) states
none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from winback.ingest.presets import Columns, cell
from winback.ingest.presets._values import phone, timestamp
from winback.ingest.readers import Record

#: Mailchimp's activity actions as our event types.
ACTION = {
    "open": "email_opened",
    "click": "email_clicked",
    "bounce": "email_bounced",
    "unsub": "email_unsubscribed",
    "unsubscribe": "email_unsubscribed",
    "unsubscribed": "email_unsubscribed",
    "abuse": "email_complained",
    "sent": "email_sent",
}

EVENT_COLUMNS = ["email", "type", "occurred_at", "properties"]


def activity(cols: Columns, records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    i_email = cols.need("Email Address", "email_address", "Email")
    i_action = cols.find("Action", "action")
    i_reason = cols.find("Reason", "reason")
    i_at = cols.need("Timestamp", "timestamp", "Unsub Time", "UNSUB_TIME")
    i_url = cols.find("URL", "url")
    i_bounce = cols.find("Type", "type")
    i_campaign = cols.find("Campaign ID", "campaign_id")

    def rows() -> Iterator[Record]:
        for record in records:
            if record.problem is not None:
                yield record
                continue
            v = record.values
            action = cell(v, i_action).lower()
            if not action and i_action is None:
                action = "unsub"  # an unsubscribe report
            properties = {
                k: value
                for k, value in (
                    ("url", cell(v, i_url)),
                    ("bounce_type", cell(v, i_bounce)),
                    ("campaign_id", cell(v, i_campaign)),
                    ("reason", cell(v, i_reason)),
                )
                if value
            }
            yield Record(
                record.line,
                [
                    cell(v, i_email),
                    ACTION.get(action, action),
                    timestamp(cell(v, i_at)),
                    json.dumps(properties, ensure_ascii=False) if properties else "",
                ],
            )

    return EVENT_COLUMNS, rows()


CONTACT_COLUMNS = ["customer_id", "email", "phone", "first_name", "last_name", "email_consent"]


def audience(cols: Columns, records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    i_email = cols.need("Email Address", "email_address")
    i_first = cols.find("First Name", "FNAME")
    i_last = cols.find("Last Name", "LNAME")
    i_phone = cols.find("Phone Number", "PHONE")
    left = cols.find("UNSUB_TIME", "CLEAN_TIME") is not None
    never = cols.path.name.lower().startswith(("nonsubscribed", "non_subscribed"))
    consent = "" if never else "no" if left else "yes"

    def rows() -> Iterator[Record]:
        for record in records:
            if record.problem is not None:
                yield record
                continue
            v = record.values
            yield Record(
                record.line,
                [
                    "",
                    cell(v, i_email),
                    phone(cell(v, i_phone)),
                    cell(v, i_first),
                    cell(v, i_last),
                    consent,
                ],
            )

    return CONTACT_COLUMNS, rows()
