"""A client-side rate limit on calls to the Kubernetes API (QPS with a burst).

A controller that reconciles a thousand Canaries after a restart must not
flood the API server: like client-go, every call first takes a token from a
bucket that refills at ``qps`` tokens a second and holds at most ``burst``.
Waiters are served in arrival order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """Tokens refill continuously at ``qps`` per second up to ``burst``; ``acquire`` waits for one."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if qps <= 0:
            raise ValueError("qps must be positive")
        self.qps = float(qps)
        self.burst = max(1, int(burst))
        self._clock = clock
        self._tokens = float(self.burst)
        self._stamp = clock()
        self._lock = asyncio.Lock()
        #: Total seconds callers spent waiting for a token (exported as a metric).
        self.waited_seconds = 0.0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.qps)
        self._stamp = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            if self._tokens < 1.0:
                delay = (1.0 - self._tokens) / self.qps
                self.waited_seconds += delay
                await asyncio.sleep(delay)
                self._refill()
            self._tokens -= 1.0
