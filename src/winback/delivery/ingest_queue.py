"""Group commit: many concurrent writers hand their items to one writer thread, which commits
whatever has queued in one transaction, and each is answered once that transaction has
committed.

The event API uses it to append to its journal (:mod:`winback.delivery.event_journal`):
concurrent requests share one append and one commit instead of each taking the journal's
lock in turn. A request is answered only after its items are committed. Items
are validated before they are queued; if a group's transaction fails all the same, its
requests are written one by one so that the failure reaches only the one that caused it.

Bounds: a group holds at most ``max_items`` items (a request is never split); at most
``max_pending`` items wait at once (beyond, :class:`~winback.store.busy.StoreBusy` at once);
a request still waiting for the writer after ``wait_seconds`` is answered with
:class:`~winback.store.busy.StoreBusy` and never written. A request the writer has taken is
always answered with its transaction's outcome."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from winback.store.busy import StoreBusy

Item = TypeVar("Item")
Result = TypeVar("Result")

#: Items committed in one transaction at most.
MAX_ITEMS = 5_000
#: Items waiting at most; more are refused with StoreBusy.
MAX_PENDING = 50_000
#: Seconds a request may wait for the writer before it is refused with StoreBusy.
WAIT_SECONDS = 10.0

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request(Generic[Item, Result]):
    items: Sequence[Item]
    deadline: float
    future: Future[Result] = field(default_factory=Future)


class IngestQueue(Generic[Item, Result]):
    """``write_group(requests)`` commits the items of several requests in one transaction
    and returns one result per request; ``write_one(items)`` commits one request alone (used
    to isolate a failure)."""

    def __init__(
        self,
        write_group: Callable[[Sequence[Sequence[Item]]], list[Result]],
        write_one: Callable[[Sequence[Item]], Result],
        *,
        max_items: int = MAX_ITEMS,
        max_pending: int = MAX_PENDING,
        wait_seconds: float = WAIT_SECONDS,
        name: str = "winback-ingest",
    ) -> None:
        self._write_group = write_group
        self._write_one = write_one
        self.max_items = max_items
        self.max_pending = max_pending
        self.wait_seconds = wait_seconds
        self._name = name
        self._queue: deque[_Request[Item, Result]] = deque()
        self._queued_items = 0
        self._cond = threading.Condition()
        self._closing = False
        self._writer: threading.Thread | None = None
        #: Transactions committed and requests written, for tests and benchmarks.
        self.groups = 0
        self.requests = 0
        #: Requests in the transaction being written now.
        self.writing = 0

    @property
    def waiting(self) -> int:
        """Requests queued for the next transaction."""
        with self._cond:
            return len(self._queue)

    def submit(self, items: Sequence[Item]) -> Future[Result]:
        """Queue ``items`` (already validated) for the next group; the future gets the
        request's result once committed, or the exception that kept it from being written."""
        request: _Request[Item, Result] = _Request(items, time.monotonic() + self.wait_seconds)
        with self._cond:
            if self._queued_items and self._queued_items + len(items) > self.max_pending:
                raise StoreBusy(
                    f"{self._queued_items} events are waiting to be written; try again shortly",
                    retry_after=1,
                )
            self._queue.append(request)
            self._queued_items += len(items)
            if self._writer is None:
                self._closing = False
                self._writer = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._writer.start()
            self._cond.notify()
        return request.future

    def close(self, timeout: float | None = None) -> None:
        """Write what is queued, then stop the writer thread (a later :meth:`submit` starts
        a new one)."""
        with self._cond:
            writer = self._writer
            self._closing = True
            self._cond.notify()
        if writer is not None:
            writer.join(timeout)

    def _take(self) -> list[_Request[Item, Result]] | None:
        with self._cond:
            while not self._queue:
                if self._closing:
                    self._writer = None
                    return None
                self._cond.wait()
            group = [self._queue.popleft()]
            size = len(group[0].items)
            while self._queue and size + len(self._queue[0].items) <= self.max_items:
                request = self._queue.popleft()
                size += len(request.items)
                group.append(request)
            self._queued_items -= size
            return group

    def _run(self) -> None:
        while (group := self._take()) is not None:
            now = time.monotonic()
            live: list[_Request[Item, Result]] = []
            for request in group:
                if not request.future.set_running_or_notify_cancel():
                    continue
                if request.deadline < now:
                    request.future.set_exception(
                        StoreBusy("the store stayed busy; the events were not written; try again")
                    )
                    continue
                live.append(request)
            self.writing = len(live)
            try:
                self._commit(live)
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                for request in live:
                    if not request.future.done():
                        request.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            finally:
                self.writing = 0

    def _commit(self, group: list[_Request[Item, Result]]) -> None:
        if not group:
            return
        try:
            results = self._write_group([r.items for r in group])
        except StoreBusy as exc:
            for request in group:
                request.future.set_exception(exc)
            return
        except Exception as exc:
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            log.info("a group of %d requests failed (%s); writing them one by one", len(group), exc)
            for request in group:
                self._commit_alone(request)
            return
        self.groups += 1
        self.requests += len(group)
        for request, result in zip(group, results, strict=True):
            request.future.set_result(result)

    def _commit_alone(self, request: _Request[Item, Result]) -> None:
        try:
            result = self._write_one(request.items)
        except Exception as exc:
            request.future.set_exception(exc)
        else:
            self.groups += 1
            self.requests += 1
            request.future.set_result(result)
