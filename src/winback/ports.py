"""The interfaces the core declares and adapters implement (the engine knows nothing of
SMTP, HTTP or files):

* :class:`Channel`: delivers outbox messages (``send``, ``submit``, ``send_many``,
  ``close``); :class:`OneAtATime` gives a channel that only knows ``send`` the rest;
* :class:`~winback.clock.Clock`: the current instant (system, or fixed in tests and
  simulations);
* :data:`ByteProgress` and :data:`StepProgress`: the callbacks through which long work
  reports progress (the core never prints);
* :class:`SegmentRefresh` and :class:`Delivering`: what an engine pass needs of the
  segments and of delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from winback.clock import Clock

if TYPE_CHECKING:
    import threading
    from contextlib import AbstractContextManager
    from datetime import datetime

    from winback.delivery.worker import BatchReport
    from winback.store.slices import SliceLog

__all__ = [
    "ByteProgress",
    "Channel",
    "Clock",
    "DeliveryFailed",
    "Durable",
    "OnResult",
    "OneAtATime",
    "Outcome",
    "OutboundMessage",
    "SendResult",
    "Sink",
    "StepProgress",
    "StopSignal",
    "result_of",
]

#: Called with (bytes read, total bytes) as a file is read.
ByteProgress = Callable[[int, int], None]
#: Called with the name of each step as it starts.
StepProgress = Callable[[str], None]


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


class StopSignal(Protocol):
    """Asks a batch to stop taking messages (a :class:`threading.Event` is one)."""

    def is_set(self) -> bool: ...


class Channel(Protocol):
    """Delivers messages. ``send`` must be idempotent per ``dedup_key``: called again for a
    key it already delivered (after a crash), it must not deliver twice (a provider that can
    only be asked to drop copies gets the same ``message_id`` / Idempotency-Key). Returns a
    provider id or None; raises :class:`DeliveryFailed` when the provider refused.

    ``submit`` sends in the background (the delivery worker renders the next message while
    this one is on the wire); ``send_many`` sends a batch (None entries are skipped), calling
    ``on_result(index, result)`` for each outcome as it comes, in the thread that sent it,
    and calling the :data:`Durable` it returns before that thread's connection can have
    another message accepted; it stops taking messages once ``stop`` is set and returns the
    results (None for a message not sent). ``close`` waits for the sends in flight and
    releases the connections."""

    def send(self, message: OutboundMessage) -> str | None: ...

    def submit(self, message: OutboundMessage) -> Future[SendResult]: ...

    def send_many(
        self,
        messages: Sequence[OutboundMessage | None],
        on_result: OnResult | None = None,
        stop: StopSignal | None = None,
    ) -> list[SendResult | None]: ...

    def close(self) -> None: ...


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
        """The ``send`` view: a provider id, or :class:`DeliveryFailed`."""
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


class _Sends(Protocol):
    def send(self, message: OutboundMessage) -> str | None: ...


def result_of(channel: _Sends, message: OutboundMessage) -> SendResult:
    """Send through ``channel.send`` and classify the outcome."""
    try:
        return SendResult("sent", "accepted", channel.send(message))
    except DeliveryFailed as exc:
        outcome: Outcome = "retry" if exc.temporary else "bounced" if exc.bounced else "failed"
        return SendResult(outcome, exc.detail, code=exc.code)
    except OSError as exc:
        return SendResult("retry", f"{type(exc).__name__}: {exc}")


class OneAtATime:
    """The rest of :class:`Channel` for a channel that only sends one message at a time
    (files, counters, test doubles): subclasses define ``send``. ``submit`` sends at once;
    ``send_many`` sends in turn, each outcome reported and made durable before the next
    message; ``close`` has nothing to release."""

    def send(self, message: OutboundMessage) -> str | None:
        raise NotImplementedError

    def submit(self, message: OutboundMessage) -> Future[SendResult]:
        future: Future[SendResult] = Future()
        future.set_result(result_of(self, message))
        return future

    def send_many(
        self,
        messages: Sequence[OutboundMessage | None],
        on_result: OnResult | None = None,
        stop: StopSignal | None = None,
    ) -> list[SendResult | None]:
        results: list[SendResult | None] = [None] * len(messages)
        for i, message in enumerate(messages):
            if stop is not None and stop.is_set():
                break
            if message is None:
                continue
            results[i] = result = result_of(self, message)
            durable = on_result(i, result) if on_result is not None else None
            if durable is not None:
                durable()
        return results

    def close(self) -> None:
        return None


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


class SegmentRefresh(Protocol):
    """What a tick needs of the segments: bring materialised membership up to ``now``."""

    def refresh(
        self,
        now: datetime | None = None,
        *,
        stop: threading.Event | None = None,
        log: SliceLog | None = None,
    ) -> object: ...


class Delivering(Protocol):
    """What a pass needs of delivery: hand the due outbox to the channels."""

    def deliver_due(self, *, stop: threading.Event | None = None) -> BatchReport: ...

    def keep_connections(self) -> AbstractContextManager[None]: ...
