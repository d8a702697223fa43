"""Channels put rendered messages on the wire. Each one implements :class:`Channel`; the
delivery worker knows nothing of SMTP or HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Outcome = Literal["sent", "retry", "bounced", "failed"]


@dataclass(slots=True)
class Outgoing:
    """One message ready to send."""

    outbox_id: int
    channel: str
    to: str
    message_id: str
    data: bytes = b""  # email: the RFC 5322 bytes
    fields: dict[str, Any] = field(default_factory=dict)  # sms/push/webhook: rendered values
    sender: str = ""
    provider: str | None = None


@dataclass(slots=True)
class SendResult:
    """What the provider said. ``retry``: temporary (4xx, dropped connection); ``bounced``:
    the address is permanently bad (5xx on the recipient); ``failed``: permanent, not the
    address's fault."""

    outcome: Outcome
    detail: str = ""
    provider_id: str | None = None
    code: int | None = None


class Channel(Protocol):
    """Sends a batch of messages (in parallel if it can) and returns one result each, in
    order. Must not raise for a single message's failure."""

    def send_batch(self, messages: Sequence[Outgoing]) -> list[SendResult]: ...

    def close(self) -> None: ...
