"""Wake-ups at a due time, as timers on the event loop.

A Canary in the middle of a run needs attention exactly when its next step is
due, and an idle one needs none at all. Each Canary has at most one pending
wake-up (one loop timer, keyed by the Canary); scheduling again replaces it. A
wake-up that fires late still fires, so a busy controller is late rather than
forgetful, and a wake-up is never dropped because an earlier one for the same
Canary is still being handled (APScheduler, used before, skipped such jobs
under load and so lost steps until something else woke the Canary).

Due times are wall-clock datetimes (they come from status); each is turned
into a delay on the loop's monotonic clock when it is scheduled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

log = structlog.get_logger("canaryd.scheduler")

WakeCallback = Callable[[str, datetime], Awaitable[None]]
"""Called on the event loop with (key, the time the wake-up was due)."""


class WakeupScheduler:
    def __init__(
        self, callback: WakeCallback, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._callback = callback
        self._clock = clock
        self._due: dict[str, datetime] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False

    def start(self) -> None:
        """Fire wake-ups from now on (those scheduled before ``start`` fire once started)."""
        if self._running:
            return
        self._running = True
        for key, when in list(self._due.items()):
            self._arm(key, when)

    def shutdown(self) -> None:
        self._running = False
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._due.clear()

    def _arm(self, key: str, when: datetime) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, (when - self._clock()).total_seconds())
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._timers[key] = loop.call_at(loop.time() + delay, self._fire, key, when)

    def _fire(self, key: str, due: datetime) -> None:
        self._timers.pop(key, None)
        if self._due.get(key) == due:
            del self._due[key]
        task = asyncio.get_running_loop().create_task(self._call(key, due))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, key: str, due: datetime) -> None:
        try:
            await self._callback(key, due)
        except Exception:
            log.exception("wake-up failed", key=key)

    def wake_at(self, key: str, when: datetime) -> None:
        """Make ``when`` the one pending wake-up for ``key`` (replacing any earlier one)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if self._due.get(key) == when:
            return
        self._due[key] = when
        if self._running:
            self._arm(key, when)

    def cancel(self, key: str) -> None:
        if self._due.pop(key, None) is None:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def cancel_all(self) -> None:
        for key in list(self._due):
            self.cancel(key)

    def due(self, key: str) -> datetime | None:
        return self._due.get(key)

    def __len__(self) -> int:
        return len(self._due)
