"""Sending a rendered batch: each channel's messages in parallel with the other channels',
each acceptance recorded as it comes (in the channel's thread, before that connection sends
another message). The first failure stops every channel after the messages on the wire."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from winback.delivery.channels import Channel, Durable, OutboundMessage, SendResult
from winback.delivery.worker.decide import Decision
from winback.delivery.worker.record import OutcomeRecorder, Settled
from winback.ports import StopSignal


@dataclass
class Batch:
    """One claimed batch, as far as it got: what was decided without sending, and what the
    channels said of what was sent."""

    rows: Sequence[dict[str, Any]]
    held: list[Decision] = field(default_factory=list)
    sent: dict[int, tuple[Decision, SendResult]] = field(default_factory=dict)

    def settled(self) -> list[Settled]:
        return [(d, None) for d in self.held] + list(self.sent.values())

    def unsent(self) -> list[int]:
        """Claimed rows neither decided without sending nor sent: safe to hand back."""
        done = {int(d.row["id"]) for d in self.held} | set(self.sent)
        return [oid for r in self.rows if (oid := int(r["id"])) not in done]


class Halted(Exception):
    """Another channel of the batch failed: this one stops too."""


class _Either:
    """Set when either of two signals is."""

    def __init__(self, first: StopSignal | None, second: StopSignal) -> None:
        self.first, self.second = first, second

    def is_set(self) -> bool:
        return self.second.is_set() or (self.first is not None and self.first.is_set())


class BatchSender:
    """Sends one batch's rendered messages through the channels, recording acceptances with
    ``recorder`` and every outcome in ``batch``."""

    def __init__(
        self,
        channels: Mapping[str, Channel],
        recorder: OutcomeRecorder,
        batch: Batch,
        stop: StopSignal | None,
    ) -> None:
        self.channels = channels
        self.recorder = recorder
        self.batch = batch
        self.abort = threading.Event()
        self.stop = _Either(stop, self.abort)

    def send(self, groups: Mapping[str, list[Decision]]) -> None:
        """Send each channel's group (in a thread per channel when there are several); the
        first error is raised once all have stopped."""
        jobs = list(groups.items())
        if not jobs:
            return
        if len(jobs) == 1:
            self._deliver(*jobs[0])
            return
        errors: list[BaseException] = []
        with ThreadPoolExecutor(len(jobs), thread_name_prefix="winback-channel") as pool:
            futures = [pool.submit(self._deliver, key, group) for key, group in jobs]
            for future in futures:
                try:
                    future.result()
                except BaseException as exc:
                    errors.append(exc)
        if errors:
            raise next((e for e in errors if not isinstance(e, Halted)), errors[0])

    def _deliver(self, key: str, group: list[Decision]) -> None:
        messages: list[OutboundMessage | None] = [d.outgoing for d in group]
        try:
            results = self.channels[key].send_many(messages, self._reporter(group), self.stop)
        except BaseException:
            self.abort.set()
            raise
        for d, result in zip(group, results, strict=True):  # any not reported
            if result is not None:
                self.batch.sent.setdefault(int(d.row["id"]), (d, result))

    def _reporter(self, group: list[Decision]) -> Callable[[int, SendResult], Durable | None]:
        def report(i: int, result: SendResult) -> Durable | None:
            d = group[i]
            self.batch.sent[int(d.row["id"])] = (d, result)
            if self.abort.is_set():
                raise Halted
            durable = self.recorder.accept(d, result)
            if durable is None:
                return None
            return self._guarded(durable)

        return report

    def _guarded(self, durable: Durable) -> Durable:
        """``durable``, stopping every channel when it fails."""

        def recorded() -> None:
            try:
                durable()
            except BaseException:
                self.abort.set()
                raise

        return recorded
