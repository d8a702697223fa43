"""Token bucket: at most ``rate`` operations per second on average, bursts up to ``burst``.
Thread-safe; shared by all connections to one provider."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._clock, self._sleep = clock, sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self, n: float = 1.0) -> float:
        """Take ``n`` tokens, waiting as long as needed; returns the seconds waited."""
        if self.rate <= 0:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= n:
                    self._tokens -= n
                    return waited
                need = (n - self._tokens) / self.rate
            self._sleep(need)
            waited += need


def backoff(attempt: int, base: float, cap: float = 3600.0, *, jitter: float = 0.5) -> float:
    """Exponential backoff with jitter: ``base * 2**(attempt-1)``, capped, then scaled by a
    random factor in ``[1 - jitter, 1]`` so that retries of many messages spread out."""
    import random

    delay: float = min(cap, base * (2 ** max(0, attempt - 1)))
    return delay * (1 - jitter * random.random())
