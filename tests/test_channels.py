"""The channel kinds: one list (winback.channels) that the schema, templates, the file channel,
the flow and segment models and the delivery worker agree with."""

from __future__ import annotations

from typing import get_args

from winback.channels import (
    ADDRESS_COLUMNS,
    BY_NAME,
    CHANNEL_KINDS,
    CONSENT_CHANNELS,
    kind_of,
    normalise_address,
)
from winback.delivery.channels.setup import FILE_CHANNELS
from winback.delivery.messages.templates import CHANNEL_FIELDS, REQUIRED
from winback.flows.models import Channel as FlowChannel
from winback.flows.models import Entry, SuppressStep
from winback.segments.model import ConsentCondition
from winback.store.schema import contacts, suppressions


def test_every_reader_follows_the_list() -> None:
    names = [k.name for k in CHANNEL_KINDS]
    assert CONSENT_CHANNELS == ("email", "sms", "push")
    for channel in CONSENT_CHANNELS:
        assert f"{channel}_consent" in contacts.c
    assert set(CHANNEL_FIELDS) == set(REQUIRED) == set(names)
    assert FILE_CHANNELS == ("email", "sms", "push")
    assert set(get_args(FlowChannel)) == {*names, "file"}
    entry_consent = get_args(Entry.model_fields["consent"].annotation)[0]
    assert set(get_args(entry_consent)) == set(CONSENT_CHANNELS)
    assert set(get_args(ConsentCondition.model_fields["consent"].annotation)) == set(
        CONSENT_CHANNELS
    )
    suppressible = get_args(SuppressStep.model_fields["suppress"].annotation)
    assert set(suppressible) == set(ADDRESS_COLUMNS)
    for column in ADDRESS_COLUMNS.values():
        assert column in contacts.c
    assert "channel" in suppressions.c


def test_addresses_come_from_the_kind() -> None:
    person = {"email": "Ada@Example.com", "phone": "", "attributes": {"push_token": "tok"}}
    assert BY_NAME["email"].address(person) == "Ada@Example.com"
    assert BY_NAME["sms"].address(person) is None
    assert BY_NAME["push"].address(person) == "tok"
    assert kind_of("webhook:crm") is BY_NAME["webhook"] and kind_of("fax") is None
    assert normalise_address("email", " Ada@Example.com ") == "ada@example.com"
    assert normalise_address("sms", " +39 06 ") == "+39 06"
