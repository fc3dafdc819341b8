"""One serialized worker per Canary.

Everything that concerns one Canary (a watch event on it or on anything it
references, a due wake-up, a retry) is handled by that Canary's own task, one
at a time and in order, so two decisions about the same Canary never overlap.
A burst of events while a decision is running collapses into one more pass,
because each pass reads the current state from the caches anyway. Canaries
are independent of one another, so their workers run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from canaryd.adapters.informer import Key

log = structlog.get_logger("canaryd.workers")

Handler = Callable[[Key], Awaitable[None]]


class _Worker:
    def __init__(self, key: Key, handler: Handler) -> None:
        self.key = key
        self.dirty = asyncio.Event()
        self.dirty.set()
        self.busy = False
        self._handler = handler
        self.task = asyncio.create_task(self._loop(), name=f"canary:{key[0]}/{key[1]}")

    async def _loop(self) -> None:
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            self.busy = True
            try:
                await self._handler(self.key)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Nothing, not even a broken log stream, may end the worker of a Canary.
                with contextlib.suppress(Exception):
                    log.exception("reconcile crashed", namespace=self.key[0], name=self.key[1])
            finally:
                self.busy = False


class WorkerPool:
    """Per-key tasks; ``enqueue`` marks a key dirty and starts its worker if needed."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._workers: dict[Key, _Worker] = {}
        self.running = False

    def start(self) -> None:
        self.running = True

    def enqueue(self, key: Key) -> None:
        if not self.running:
            return
        worker = self._workers.get(key)
        if worker is None:
            self._workers[key] = _Worker(key, self._handler)
        else:
            worker.dirty.set()

    async def discard(self, key: Key) -> None:
        """Stop the worker of a Canary that no longer exists."""
        worker = self._workers.pop(key, None)
        if worker is not None and worker.task is not asyncio.current_task():
            worker.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker.task

    async def stop(self, grace: float = 5.0) -> None:
        """Stop every worker, letting none start again until ``start``.

        A decision under way is given ``grace`` seconds to finish its writes.
        """
        self.running = False
        workers = list(self._workers.values())
        self._workers.clear()
        await self._finish(workers, grace)

    @staticmethod
    async def _finish(workers: list[_Worker], grace: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(w.busy for w in workers) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for worker in workers:
            worker.task.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker.task

    async def stop_some(self, which: Callable[[Key], bool], grace: float = 5.0) -> None:
        """Stop the workers of the keys ``which`` picks (a shard given up), as ``stop`` does for all."""
        workers = [w for key, w in self._workers.items() if which(key)]
        for worker in workers:
            del self._workers[worker.key]
        await self._finish(workers, grace)

    def __len__(self) -> int:
        return len(self._workers)

    async def idle(self, timeout: float = 10.0) -> bool:
        """Wait until no worker has pending work (for tests and benchmarks)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if all(not w.dirty.is_set() for w in self._workers.values()):
                await asyncio.sleep(0.05)
                if all(not w.dirty.is_set() for w in self._workers.values()):
                    return True
            await asyncio.sleep(0.02)
        return False
