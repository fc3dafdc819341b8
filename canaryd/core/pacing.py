"""Token-bucket pacing as a pure calculation: how long the next caller must wait, given the time.

Two things pace their sends with it: the notifier (a chat webhook takes about
one message a second) and the load tester (a step's load must not exceed the
rate its Canary asked for). Keeping the arithmetic apart from any clock and
any sleeping makes the rate provable with plain numbers in tests, and lets
each side wait in its own way.

The bucket refills at ``rate`` tokens a second up to ``burst``. ``reserve``
takes one token at ``now`` and returns how long the caller must wait before
using it; the balance may go below zero, which queues callers one after the
other (each reservation pushes the next one a ``1/rate`` later), so many
concurrent callers together never exceed ``rate`` on average or ``burst`` at
once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    rate: float
    burst: int
    tokens: float = -1.0
    stamp: float | None = None

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"a rate must be positive, not {self.rate}")
        if self.burst < 1:
            raise ValueError(f"a burst must be at least 1, not {self.burst}")
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def _refill(self, now: float) -> None:
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        if self.stamp is None or now > self.stamp:
            self.stamp = now

    def reserve(self, now: float) -> float:
        """Take a token at ``now``; the seconds to wait before acting on it (0 when one was there)."""
        self._refill(now)
        self.tokens -= 1.0
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate

    def available(self, now: float) -> float:
        """Tokens in the bucket at ``now`` (negative while reservations are queued), without taking one."""
        self._refill(now)
        return self.tokens
