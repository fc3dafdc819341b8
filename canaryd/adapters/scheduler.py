"""Wake-ups at a due time, on APScheduler 3's AsyncIOScheduler.

A Canary in the middle of a run needs attention exactly when its next step is
due, and an idle one needs none at all. Each Canary has at most one pending
wake-up (a date job whose id is the Canary's key); scheduling again replaces
it. A wake-up that fires late still fires (no misfire grace limit), so a busy
controller is late rather than forgetful.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

WakeCallback = Callable[[str, datetime], Awaitable[None]]
"""Called on the event loop with (key, the time the wake-up was due)."""


class WakeupScheduler:
    def __init__(self, callback: WakeCallback) -> None:
        self._callback = callback
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._due: dict[str, datetime] = {}

    def start(self) -> None:
        if not self._scheduler.running:
            self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._due.clear()

    async def _fire(self, key: str, due: datetime) -> None:
        if self._due.get(key) == due:
            del self._due[key]
        await self._callback(key, due)

    def wake_at(self, key: str, when: datetime) -> None:
        """Make ``when`` the one pending wake-up for ``key`` (replacing any earlier one)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if self._due.get(key) == when:
            return
        self._due[key] = when
        self._scheduler.add_job(
            self._fire,
            "date",
            run_date=when,
            args=[key, when],
            id=key,
            replace_existing=True,
            misfire_grace_time=None,
            coalesce=True,
        )

    def cancel(self, key: str) -> None:
        if self._due.pop(key, None) is None:
            return
        with contextlib.suppress(JobLookupError):
            self._scheduler.remove_job(key)

    def cancel_all(self) -> None:
        for key in list(self._due):
            self.cancel(key)

    def due(self, key: str) -> datetime | None:
        return self._due.get(key)

    def __len__(self) -> int:
        return len(self._due)
