"""Channels put rendered messages on the wire. They implement the one
:class:`winback.ports.Channel` protocol (``send(OutboundMessage) -> provider id``, raising
:class:`~winback.ports.DeliveryFailed`); the SMTP and HTTP channels also offer ``send_many``
to send a batch over several connections, handing each outcome to the caller as it comes
(:func:`send_each`). Any other channel is sent through in turn (:class:`InTurn`). The delivery worker knows
nothing of SMTP or HTTP."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, wait

from winback.ports import (
    BatchChannel,
    Channel,
    DeliveryFailed,
    Durable,
    OnResult,
    OutboundMessage,
    Outcome,
    SendResult,
    StopSignal,
)

__all__ = [
    "BatchChannel",
    "Channel",
    "DeliveryFailed",
    "Durable",
    "InTurn",
    "NotRecorded",
    "OnResult",
    "OutboundMessage",
    "SendResult",
    "StopSignal",
    "batched",
    "gated",
    "result_of",
    "send_each",
]


def result_of(channel: Channel, message: OutboundMessage) -> SendResult:
    """Send through any :class:`~winback.ports.Channel` and classify the outcome."""
    try:
        return SendResult("sent", "accepted", channel.send(message))
    except DeliveryFailed as exc:
        outcome: Outcome = "retry" if exc.temporary else "bounced" if exc.bounced else "failed"
        return SendResult(outcome, exc.detail, code=exc.code)
    except OSError as exc:
        return SendResult("retry", f"{type(exc).__name__}: {exc}")


class NotRecorded(Exception):
    """The outcome of a connection's previous message could not be recorded: the connection
    must not have another message accepted (raised through the channel, never a send
    outcome)."""


def send_each(
    pool: Executor,
    width: int,
    messages: Sequence[OutboundMessage | None],
    send_one: Callable[[OutboundMessage, Durable | None], SendResult],
    on_result: OnResult | None = None,
    stop: StopSignal | None = None,
) -> list[SendResult | None]:
    """Send a batch ``width`` at a time: each of ``width`` threads of ``pool`` (one per
    connection) takes the next message until none is left, with no future or queue hand-off
    per message, so a slow connection (a retry) holds up only what it is sending.

    Each outcome goes to ``on_result``; what it returns (a :data:`Durable`) is handed to the
    thread's next ``send_one``, which must call it before the provider can accept that next
    message (SMTP calls it after DATA, before the content), and is called again after it,
    and at the end. So a caller that records
    outcomes there never has more than ``width`` accepted messages unrecorded. When a
    :data:`Durable` or ``on_result`` raises, or ``stop`` is set, no thread takes a further
    message; the first error is raised once every thread has stopped. Returns the outcomes
    by index, None for a message not sent (``None`` in, never taken, or stopped by an error).
    """
    results: list[SendResult | None] = [None] * len(messages)
    turn = itertools.count()  # next() is atomic: the threads share it without a lock
    halt = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        durable: Durable | None = None
        try:
            while not halt.is_set() and (stop is None or not stop.is_set()):
                i = next(turn)
                if i >= len(messages):
                    break
                msg = messages[i]
                if msg is None:
                    continue
                try:
                    result = send_one(msg, durable)
                except NotRecorded:
                    raise
                except Exception as exc:  # a bug fails one message only
                    result = SendResult("failed", f"{type(exc).__name__}: {exc}")
                if durable is not None:
                    durable()  # at once when send_one called it already
                results[i] = result
                durable = on_result(i, result) if on_result is not None else None
            if durable is not None:
                durable()
        except BaseException as exc:
            errors.append(exc.__cause__ if isinstance(exc, NotRecorded) and exc.__cause__ else exc)
            halt.set()

    threads = [pool.submit(work) for _ in range(max(0, min(width, len(messages))))]
    try:
        wait(threads)
    except BaseException:  # interrupted while waiting: let the threads stop, then go
        halt.set()
        wait(threads)
        raise
    if errors:
        raise errors[0]
    return results


def gated(
    send_one: Callable[[OutboundMessage], SendResult],
) -> Callable[[OutboundMessage, Durable | None], SendResult]:
    """``send_one`` for :func:`send_each` when the previous outcome must be durable before a
    message is even sent (an HTTP request is accepted as a whole)."""

    def send(msg: OutboundMessage, durable: Durable | None) -> SendResult:
        if durable is not None:
            try:
                durable()
            except Exception as exc:
                raise NotRecorded(str(exc)) from exc
        return send_one(msg)

    return send


class InTurn:
    """A :class:`~winback.ports.BatchChannel` over any :class:`~winback.ports.Channel`: the
    batch is sent one message after the other, in the calling thread, each outcome made
    durable before the next message is sent."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def send(self, message: OutboundMessage) -> str | None:
        return self.channel.send(message)

    def send_many(
        self,
        messages: Sequence[OutboundMessage | None],
        on_result: OnResult | None = None,
        stop: StopSignal | None = None,
    ) -> list[SendResult | None]:
        results: list[SendResult | None] = [None] * len(messages)
        for i, msg in enumerate(messages):
            if stop is not None and stop.is_set():
                break
            if msg is None:
                continue
            results[i] = result = result_of(self.channel, msg)
            durable = on_result(i, result) if on_result is not None else None
            if durable is not None:
                durable()
        return results

    def submit(self, message: OutboundMessage) -> Future[SendResult]:
        future: Future[SendResult] = Future()
        future.set_result(result_of(self.channel, message))
        return future

    def close(self) -> None:
        """Nothing to close: a plain channel holds no connections for the worker."""


def batched(channel: Channel) -> BatchChannel:
    """``channel`` itself when it sends batches, else the same channel sent through in turn."""
    if isinstance(channel, BatchChannel):
        return channel
    return InTurn(channel)
