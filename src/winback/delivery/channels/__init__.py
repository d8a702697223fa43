"""Channels put rendered messages on the wire. They implement the one
:class:`winback.ports.Channel` protocol (``send(OutboundMessage) -> provider id``, raising
:class:`~winback.ports.DeliveryFailed`); the SMTP and HTTP channels also offer ``send_many``
to send a batch over several connections, handing each outcome to the caller as it comes
(:func:`send_each`). The delivery worker knows nothing of SMTP or HTTP."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, wait

from winback.ports import (
    Channel,
    DeliveryFailed,
    Durable,
    OnResult,
    OutboundMessage,
    Outcome,
    SendResult,
    StopSignal,
    result_of,
)

__all__ = [
    "Channel",
    "DeliveryFailed",
    "Durable",
    "NotRecorded",
    "OnResult",
    "OutboundMessage",
    "Outcome",
    "SendResult",
    "StopSignal",
    "result_of",
    "gated",
    "send_each",
]


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
