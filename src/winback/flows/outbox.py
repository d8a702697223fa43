"""Interim delivery of the outbox through a :class:`~winback.ports.Channel` (the file sink
until the delivery feature plugs in SMTP/HTTP channels).

Due pending rows are read in id order, consent is checked again at send time (a row whose
contact withdrew consent is marked ``skipped``), each message goes to the channel, and the
rows are marked ``sent`` only after the channel returned. A crash in between re-sends the
batch on restart, so channels must be idempotent per dedup key (the file sink is).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, and_, or_, select, update

from winback.flows._sql import at
from winback.ports import Channel, OutboundMessage
from winback.store.schema import contacts, outbox

CONSENT = {
    "email": contacts.c.email_consent,
    "sms": contacts.c.sms_consent,
    "push": contacts.c.push_consent,
}


@dataclass
class DeliveryReport:
    sent: int = 0
    skipped: int = 0


def deliver_due(
    engine: Engine, channel: Channel, now: datetime, *, batch_size: int = 1000
) -> DeliveryReport:
    report = DeliveryReport()
    last_id = 0
    while True:
        with engine.connect() as conn:
            rows = list(
                conn.execute(
                    select(
                        outbox.c.id,
                        outbox.c.dedup_key,
                        outbox.c.contact_id,
                        outbox.c.channel,
                        outbox.c.template,
                        outbox.c.variant,
                        outbox.c.flow,
                        outbox.c.entry_id,
                        outbox.c.step,
                        outbox.c.payload,
                        contacts.c.email,
                        contacts.c.phone,
                        contacts.c.email_consent,
                        contacts.c.sms_consent,
                        contacts.c.push_consent,
                    )
                    .join(contacts, contacts.c.id == outbox.c.contact_id)
                    .where(
                        outbox.c.status == "pending",
                        outbox.c.not_before <= at(now),
                        outbox.c.id > last_id,
                    )
                    .order_by(outbox.c.id)
                    .limit(batch_size)
                )
            )
        if not rows:
            return report
        sent, skipped = [], []
        for r in rows:
            consent = {"email": r.email_consent, "sms": r.sms_consent, "push": r.push_consent}
            if r.channel in consent and consent[r.channel] is not True:
                skipped.append(r.id)
                continue
            channel.send(
                OutboundMessage(
                    dedup_key=r.dedup_key,
                    contact_id=int(r.contact_id),
                    channel=r.channel,
                    template=r.template,
                    variant=r.variant,
                    flow=r.flow,
                    entry_id=r.entry_id,
                    step=r.step,
                    to=r.phone if r.channel == "sms" else r.email,
                    payload=r.payload or {},
                )
            )
            sent.append(r.id)
        with engine.begin() as conn:
            if sent:
                conn.execute(
                    update(outbox)
                    .where(outbox.c.id.in_(sent))
                    .values(status="sent", sent_at=at(now), attempts=outbox.c.attempts + 1)
                )
            if skipped:
                conn.execute(
                    update(outbox)
                    .where(outbox.c.id.in_(skipped))
                    .values(status="skipped", last_error="no consent at send time")
                )
        report.sent += len(sent)
        report.skipped += len(skipped)
        last_id = int(rows[-1].id)


__all__ = ["CONSENT", "DeliveryReport", "and_", "deliver_due", "or_"]
