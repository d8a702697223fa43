"""Channels put rendered messages on the wire. They implement the one
:class:`winback.ports.Channel` protocol (``send(OutboundMessage) -> provider id``, raising
:class:`~winback.ports.DeliveryFailed`); the SMTP and HTTP channels also offer ``submit`` to
send in parallel. The delivery worker knows nothing of SMTP or HTTP."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal

from winback.ports import Channel, DeliveryFailed, OutboundMessage

Outcome = Literal["sent", "retry", "bounced", "failed"]

__all__ = ["Channel", "DeliveryFailed", "OutboundMessage", "SendResult", "result_of", "settled"]


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
        """The :class:`~winback.ports.Channel` view: a provider id, or an exception."""
        if self.outcome == "sent":
            return self.provider_id
        raise DeliveryFailed(
            self.detail,
            temporary=self.outcome == "retry",
            bounced=self.outcome == "bounced",
            code=self.code,
        )


def result_of(channel: Channel, message: OutboundMessage) -> SendResult:
    """Send through any :class:`~winback.ports.Channel` and classify the outcome."""
    try:
        return SendResult("sent", "accepted", channel.send(message))
    except DeliveryFailed as exc:
        outcome: Outcome = "retry" if exc.temporary else "bounced" if exc.bounced else "failed"
        return SendResult(outcome, exc.detail, code=exc.code)
    except OSError as exc:
        return SendResult("retry", f"{type(exc).__name__}: {exc}")


def settled(result: SendResult) -> Future[SendResult]:
    future: Future[SendResult] = Future()
    future.set_result(result)
    return future
