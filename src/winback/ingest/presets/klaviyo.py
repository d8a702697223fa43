"""Klaviyo: events of the email metrics and a profiles export.

Events, one row per event as the Events API (``GET /api/events``) describes one: the
event's ``id``, ``datetime`` (ISO 8601) and ``timestamp`` (Unix seconds), its metric's
name (``Opened Email``, ``Clicked Email``, ``Bounced Email``, ``Unsubscribed``,
``Marked Email as Spam``, ``Received Email``; any other metric is a custom event), the
profile's ``email``, and the event properties ``URL``, ``Campaign Name`` and, on opens,
``Apple Privacy Open`` (``True``: an open of Apple Mail Privacy Protection, stored as a
machine open). Column names are looked up case-insensitively under the API's names and
the spreadsheet spellings (``Event ID``, ``Datetime``, ``Metric Name``, ``Email``...).
Profiles (the CSV export of a list or segment): ``Email``, ``Klaviyo ID``, ``First Name``,
``Last Name``, ``Phone Number``, ..., ``Email Marketing Consent`` (``SUBSCRIBED``,
``UNSUBSCRIBED``, ``NEVER_SUBSCRIBED``), ``Email Marketing Consent Timestamp``, ...,
``Email Suppressions`` (not empty: Klaviyo suppresses the address, after a hard bounce, a
spam complaint or an unsubscribe, and email consent is revoked), and ``SMS Marketing
Consent`` when the account has SMS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime

from winback.ingest.presets import Columns, cell
from winback.ingest.presets._values import phone, timestamp, yes_no
from winback.ingest.readers import Record

METRIC = {
    "opened email": "email_opened",
    "clicked email": "email_clicked",
    "bounced email": "email_bounced",
    "unsubscribed": "email_unsubscribed",
    "unsubscribed from email marketing": "email_unsubscribed",
    "marked email as spam": "email_complained",
    "received email": "email_delivered",
}

EVENT_COLUMNS = ["event_id", "email", "type", "occurred_at", "properties", "machine"]


def _custom(name: str) -> str:
    """Another metric as a custom event type (``Viewed Product`` -> ``viewed_product``)."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def when(text: str) -> str:
    """An event's time: ISO 8601 as it is, Unix seconds (the API's ``timestamp``) as UTC."""
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC).isoformat()
    return timestamp(text)


def events(cols: Columns, records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    i_email = cols.need("Email", "profile.email", "$email", "Profile Email")
    i_metric = cols.need("Metric Name", "metric.name", "Metric", "Event Name", "Event")
    i_iso = cols.find("Datetime", "Date")
    i_unix = cols.find("Timestamp") if i_iso is not None else cols.need("Timestamp", "Datetime")
    i_id = cols.find("Event ID", "id", "uuid")
    i_url = cols.find("URL", "Url")
    i_campaign = cols.find("Campaign Name", "$message", "Message Name")
    i_machine = cols.find("Apple Privacy Open", "Machine Open", "machine_open")

    def rows() -> Iterator[Record]:
        for record in records:
            if record.problem is not None:
                yield record
                continue
            v = record.values
            metric = cell(v, i_metric)
            properties = {
                k: value
                for k, value in (("url", cell(v, i_url)), ("campaign", cell(v, i_campaign)))
                if value
            }
            event_id = cell(v, i_id)
            yield Record(
                record.line,
                [
                    f"klaviyo:{event_id}" if event_id else "",
                    cell(v, i_email),
                    METRIC.get(metric.lower(), _custom(metric)),
                    when(cell(v, i_iso) or cell(v, i_unix)),
                    json.dumps(properties, ensure_ascii=False) if properties else "",
                    cell(v, i_machine),
                ],
            )

    return EVENT_COLUMNS, rows()


CONTACT_COLUMNS = [
    "customer_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "email_consent",
    "sms_consent",
]


def _consent(text: str) -> str:
    word = text.strip().upper()
    if word == "SUBSCRIBED":
        return "yes"
    if word in ("UNSUBSCRIBED", "NEVER_SUBSCRIBED", "SUPPRESSED"):
        return "no"
    return yes_no(text)


def profiles(cols: Columns, records: Iterator[Record]) -> tuple[list[str], Iterator[Record]]:
    i_email = cols.need("Email", "$email")
    i_id = cols.find("External ID", "$id")
    i_first = cols.find("First Name", "$first_name")
    i_last = cols.find("Last Name", "$last_name")
    i_phone = cols.find("Phone Number", "$phone_number")
    i_email_ok = cols.find("Email Marketing Consent", "Email Consent")
    i_sms_ok = cols.find("SMS Marketing Consent", "SMS Consent")
    i_suppressed = cols.find("Email Suppressions")

    def rows() -> Iterator[Record]:
        for record in records:
            if record.problem is not None:
                yield record
                continue
            v = record.values
            yield Record(
                record.line,
                [
                    cell(v, i_id),
                    cell(v, i_email),
                    phone(cell(v, i_phone)),
                    cell(v, i_first),
                    cell(v, i_last),
                    "no"
                    if cell(v, i_suppressed) not in ("", "[]")
                    else _consent(cell(v, i_email_ok)),
                    _consent(cell(v, i_sms_ok)),
                ],
            )

    return CONTACT_COLUMNS, rows()
