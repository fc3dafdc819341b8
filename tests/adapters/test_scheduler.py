"""Wake-ups on loop timers: one pending per Canary, replaced by the latest, late rather than lost."""

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


async def test_a_wake_up_due_while_the_last_one_is_still_handled_is_not_dropped():
    fired: list[datetime] = []
    release = asyncio.Event()

    async def slow_callback(key: str, due: datetime) -> None:
        fired.append(due)
        if len(fired) == 1:
            await release.wait()  # the first wake-up is still being handled ...

    scheduler = WakeupScheduler(slow_callback)
    scheduler.start()
    try:
        now = datetime.now(UTC)
        scheduler.wake_at("ns/a", now)
        await asyncio.sleep(0.05)
        scheduler.wake_at("ns/a", now + timedelta(seconds=0.05))  # ... when the next one falls due
        await asyncio.sleep(0.3)
        assert len(fired) == 2
        release.set()
    finally:
        scheduler.shutdown()


async def test_ten_thousand_wake_ups_due_together_all_fire_once():
    fired: list[str] = []

    async def callback(key: str, due: datetime) -> None:
        fired.append(key)

    scheduler = WakeupScheduler(callback)
    due = datetime.now(UTC) + timedelta(seconds=0.2)
    for i in range(10_000):
        scheduler.wake_at(f"ns/app-{i}", due)
    scheduler.start()  # scheduled before start: fire once started
    try:
        await asyncio.sleep(1.0)
        assert sorted(fired) == sorted(f"ns/app-{i}" for i in range(10_000))
        assert len(scheduler) == 0
    finally:
        scheduler.shutdown()
