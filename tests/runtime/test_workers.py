"""Per-Canary workers: one decision at a time per Canary, bursts collapsed, Canaries in parallel."""

from __future__ import annotations

import asyncio

from canaryd.runtime.workers import WorkerPool


async def test_one_canary_is_never_handled_twice_at_once_and_bursts_collapse():
    running: dict[tuple[str, str], int] = {}
    overlaps = 0
    calls: dict[tuple[str, str], int] = {}

    async def handle(key):
        nonlocal overlaps
        running[key] = running.get(key, 0) + 1
        overlaps += running[key] > 1
        calls[key] = calls.get(key, 0) + 1
        await asyncio.sleep(0.05)
        running[key] -= 1

    pool = WorkerPool(handle)
    pool.start()
    for _ in range(20):  # a burst of events for one Canary while its first pass runs
        pool.enqueue(("ns", "a"))
        await asyncio.sleep(0.001)
    pool.enqueue(("ns", "b"))
    assert await pool.idle(timeout=5)
    assert overlaps == 0
    assert 2 <= calls[("ns", "a")] <= 3, "the burst collapsed into at most a couple of passes"
    assert calls[("ns", "b")] == 1
    await pool.stop()
    pool.enqueue(("ns", "a"))
    assert len(pool) == 0, "a stopped pool (standby replica) starts no work"


async def test_a_failing_pass_does_not_kill_the_worker():
    seen = []

    async def handle(key):
        seen.append(key)
        if len(seen) == 1:
            raise RuntimeError("boom")

    pool = WorkerPool(handle)
    pool.start()
    pool.enqueue(("ns", "a"))
    await asyncio.sleep(0.05)
    pool.enqueue(("ns", "a"))
    assert await pool.idle(timeout=5)
    assert len(seen) == 2
    await pool.stop()
