"""The engine's promises, measured where requests start: the rate is never got ahead of, concurrency holds."""

from __future__ import annotations

import asyncio
import time

import pytest

from canaryd.loadtest.engine import LoadStats, Pacer, run_workers
from tests.loadtest.backends import Counts


async def _run(rps: float, concurrency: int, seconds: float, work: float) -> tuple[Counts, LoadStats, float]:
    starts = Counts()

    async def send_one() -> tuple[str, str | None]:
        starts.enter()
        try:
            await asyncio.sleep(work)
        finally:
            starts.in_flight -= 1
        return "200", None

    stats = LoadStats()
    begun = time.monotonic()
    deadline = begun + seconds
    await run_workers(
        concurrency,
        Pacer(rps),
        send_one,
        deadline=lambda: deadline,
        stats=stats,
        record=lambda *_: None,
        stopping=asyncio.Event(),
    )
    return starts, stats, begun


@pytest.mark.parametrize(("rps", "concurrency"), [(50, 8), (200, 32), (10, 1)])
async def test_the_nth_request_never_starts_before_n_over_the_rate(rps: float, concurrency: int) -> None:
    starts, stats, begun = await _run(rps, concurrency, seconds=2.0, work=0.002)
    assert starts.ahead_of_rate(rps, since=begun) == []
    assert len(starts.arrivals) <= 2.0 * rps + 1
    assert len(starts.arrivals) >= 0.7 * 2.0 * rps, "and the rate is actually reached on an idle target"
    assert stats.sent == len(starts.arrivals) and stats.max_in_flight <= concurrency


async def test_slow_answers_hold_the_workers_not_the_rate() -> None:
    starts, stats, _ = await _run(rps=1000, concurrency=4, seconds=1.0, work=0.05)
    assert starts.max_in_flight == 4 == stats.max_in_flight
    assert len(starts.arrivals) <= 4 * (1.0 / 0.05) + 4


async def test_a_deadline_moved_later_keeps_the_workers_going() -> None:
    starts = Counts()
    deadline = [time.monotonic() + 0.3]

    async def send_one() -> tuple[str, str | None]:
        starts.enter()
        starts.in_flight -= 1
        return "200", None

    async def extend() -> None:
        await asyncio.sleep(0.2)
        deadline[0] += 0.5

    begun = time.monotonic()
    await asyncio.gather(
        run_workers(
            2,
            Pacer(50),
            send_one,
            deadline=lambda: deadline[0],
            stats=LoadStats(),
            record=lambda *_: None,
            stopping=asyncio.Event(),
        ),
        extend(),
    )
    assert time.monotonic() - begun >= 0.75
    assert max(starts.arrivals) - begun >= 0.6


async def test_stopping_ends_the_load_promptly() -> None:
    stopping = asyncio.Event()
    calls = Counts()

    async def send_one() -> tuple[str, str | None]:
        calls.enter()
        calls.in_flight -= 1
        return "200", None

    asyncio.get_running_loop().call_later(0.2, stopping.set)
    begun = time.monotonic()
    await run_workers(
        3,
        Pacer(100),
        send_one,
        deadline=lambda: begun + 30,
        stats=LoadStats(),
        record=lambda *_: None,
        stopping=stopping,
    )
    assert time.monotonic() - begun < 0.5
    assert len(calls.arrivals) <= 0.2 * 100 + 3
