"""Wake-ups on APScheduler: one pending per Canary, replaced by the latest, late rather than lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from canaryd.adapters.scheduler import WakeupScheduler


async def test_latest_wake_up_replaces_the_earlier_one_and_late_ones_still_fire():
    fired: list[tuple[str, datetime, datetime]] = []

    async def callback(key: str, due: datetime) -> None:
        fired.append((key, due, datetime.now(UTC)))

    scheduler = WakeupScheduler(callback)
    scheduler.start()
    try:
        now = datetime.now(UTC)
        scheduler.wake_at("ns/a", now + timedelta(seconds=5))
        scheduler.wake_at("ns/a", now + timedelta(seconds=0.2))  # replaces the 5 s one
        scheduler.wake_at("ns/b", now - timedelta(seconds=3))  # already overdue: fires at once
        scheduler.wake_at("ns/c", now + timedelta(seconds=0.1))
        scheduler.cancel("ns/c")
        await asyncio.sleep(0.6)
        keys = [key for key, _, _ in fired]
        assert sorted(keys) == ["ns/a", "ns/b"]
        for _, due, at in fired:
            assert at >= due
        assert len(scheduler) == 0
    finally:
        scheduler.shutdown()
