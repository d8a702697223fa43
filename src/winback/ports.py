"""Small interfaces the core declares and adapters implement (the engine knows nothing of
SMTP, HTTP or files): a :class:`Channel` delivers one outbox message."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable


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
    provider id or None; raises :class:`DeliveryFailed` when the provider refused. A channel
    that sends batches itself implements :class:`BatchChannel`."""

    def send(self, message: OutboundMessage) -> str | None: ...


Outcome = Literal["sent", "retry", "bounced", "failed"]


@dataclass(slots=True)
class SendResult:
    """What the provider said. ``retry``: temporary (4xx, dropped connection); ``bounced``:
    the address is permanently bad (5xx on the recipient); ``failed``: permanent, not the
    address's fault."""

    outcome: Outcome
    detail: str = ""
    provider_id: str | None = None
    code: int | None = None
    retry_after: float | None = None  # seconds the provider asked us to wait (Retry-After)

    def raise_or_id(self) -> str | None:
        """The :class:`Channel` view: a provider id, or an exception."""
        if self.outcome == "sent":
            return self.provider_id
        raise DeliveryFailed(
            self.detail,
            temporary=self.outcome == "retry",
            bounced=self.outcome == "bounced",
            code=self.code,
        )


#: Returns once the outcome handed to an :data:`OnResult` is durable; raises when it could
#: not be made so.
Durable = Callable[[], None]

#: Called with a message's index in the batch and its outcome, in the thread that sent it. It
#: may return a :data:`Durable`, which that thread calls before its connection can have
#: another message accepted.
OnResult = Callable[[int, SendResult], Durable | None]


class StopSignal(Protocol):
    """Asks a batch to stop taking messages (a :class:`threading.Event` is one)."""

    def is_set(self) -> bool: ...


@runtime_checkable
class BatchChannel(Channel, Protocol):
    """A channel as the delivery worker drives it: a batch at a time over the channel's own
    connections (``send_many``), one message in the background (``submit``), and ``close``
    for its connections. ``send_many`` reports each outcome to ``on_result`` in the thread
    that sent it and calls the :data:`Durable` it returns before that connection can have
    another message accepted; it takes no further message once ``stop`` is set, and returns
    the outcomes by index (None: not sent)."""

    def send_many(
        self,
        messages: Sequence[OutboundMessage | None],
        on_result: OnResult | None = None,
        stop: StopSignal | None = None,
    ) -> list[SendResult | None]: ...

    def submit(self, message: OutboundMessage) -> Future[SendResult]: ...

    def close(self) -> None: ...


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
