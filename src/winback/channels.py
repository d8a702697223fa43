"""The channel kinds winback sends through, in one list that consent, suppression, the
delivery adapters, the templates and the store schema read.

Adding a kind is an entry here, an adapter in :mod:`winback.delivery.channels` (built in
:mod:`winback.delivery.channels.setup`) and, when it has consent, a migration adding its
``<name>_consent`` column."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ChannelKind:
    """One kind of channel and what the rest of winback needs to know of it."""

    name: str
    #: A message reaches the contact: the contact's ``<name>_consent`` column applies (an
    #: explicit refusal stops every message, marketing needs an explicit yes), and so do
    #: quiet hours and the suppression list; the dry-run file channel stands in for it.
    personal: bool = True
    #: Where the contact's address is: a column of ``contacts``...
    address_column: str | None = None
    #: ...or a key of ``contacts.attributes``.
    address_attribute: str | None = None
    #: One adapter per configured provider, keyed ``<name>:<provider>``.
    per_provider: bool = False
    #: The fields a template for this channel may set, and those it must.
    fields: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    #: Addresses compare case-insensitively (and are kept lower case on the suppression list).
    case_insensitive: bool = False

    def address(self, contact: Mapping[str, Any]) -> str | None:
        """The contact's address on this channel, if any."""
        if self.address_column is not None:
            value = contact.get(self.address_column)
            return str(value) if value else None
        if self.address_attribute is not None:
            value = (contact.get("attributes") or {}).get(self.address_attribute)
            return str(value) if value else None
        return None

    def normalise(self, address: str) -> str:
        """The address as the suppression list keeps and compares it."""
        return address.strip().lower() if self.case_insensitive else address.strip()


CHANNEL_KINDS: tuple[ChannelKind, ...] = (
    ChannelKind(
        "email",
        address_column="email",
        fields=("subject", "preheader", "html", "text"),
        required=("subject", "html"),
        case_insensitive=True,
    ),
    ChannelKind("sms", address_column="phone", fields=("body",), required=("body",)),
    ChannelKind(
        "push", address_attribute="push_token", fields=("title", "body", "url"), required=("body",)
    ),
    ChannelKind("webhook", personal=False, per_provider=True, fields=("body",)),
)

BY_NAME: dict[str, ChannelKind] = {kind.name: kind for kind in CHANNEL_KINDS}

#: The kinds with a ``<name>_consent`` column on contacts.
CONSENT_CHANNELS: tuple[str, ...] = tuple(k.name for k in CHANNEL_KINDS if k.personal)

#: The kinds whose addresses are columns of contacts (those an erasure pseudonymises on the
#: suppression list).
ADDRESS_COLUMNS: dict[str, str] = {
    k.name: k.address_column for k in CHANNEL_KINDS if k.address_column is not None
}


def kind_of(name: str) -> ChannelKind | None:
    """The kind of a channel name (``webhook:crm`` is a ``webhook``)."""
    return BY_NAME.get(name.split(":", 1)[0])


def normalise_address(channel: str, address: str) -> str:
    """``address`` as the suppression list of ``channel`` keeps it."""
    kind = kind_of(channel)
    return kind.normalise(address) if kind is not None else address.strip()
