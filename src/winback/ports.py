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


class Channel(Protocol):
    """Delivers messages. ``send`` must be idempotent per ``dedup_key``: called again for a
    key it already delivered (after a crash), it must not deliver twice. Returns a provider
    id or None."""

    def send(self, message: OutboundMessage) -> str | None: ...


#: The flow engine's name for where messages go.
Sink = Channel
