"""Small interfaces the core declares and adapters implement (the engine knows nothing of
SMTP, HTTP or files): a :class:`Channel` delivers one outbox message."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class OutboundMessage:
    """One outbox row, ready for a channel."""

    dedup_key: str
    contact_id: int
    channel: str
    template: str | None
    variant: str | None = None
    flow: str | None = None
    entry_id: int | None = None
    step: str | None = None
    to: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    # Filled by the delivery worker once the message is rendered (None/empty before):
    message_id: str | None = None  # deterministic, from dedup_key (same on a resend)
    sender: str | None = None
    content: str = ""  # email: the RFC 5322 message (ASCII: encoded words, 7bit/QP parts)
    fields: dict[str, Any] = field(default_factory=dict)  # sms/push/webhook: rendered values


class Channel(Protocol):
    """Delivers messages. ``send`` must be idempotent per ``dedup_key``: called again for a
    key it already delivered (after a crash), it must not deliver twice (a provider that can
    only be asked to drop copies gets the same ``message_id`` / Idempotency-Key). Returns a
    provider id or None; raises :class:`DeliveryFailed` when the provider refused.

    Channels may also offer ``submit(message) -> Future`` to send in the background, which
    the delivery worker uses to render the next message while this one is on the wire."""

    def send(self, message: OutboundMessage) -> str | None: ...


class DeliveryFailed(Exception):
    """The provider did not take the message. ``temporary``: try again later (4xx, dropped
    connection); ``bounced``: the address itself is permanently bad (5xx on the recipient)."""

    def __init__(
        self, detail: str, *, temporary: bool, bounced: bool = False, code: int | None = None
    ) -> None:
        super().__init__(detail)
        self.detail, self.temporary, self.bounced, self.code = detail, temporary, bounced, code


#: The flow engine's name for where messages go.
Sink = Channel
