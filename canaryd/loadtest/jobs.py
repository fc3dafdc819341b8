"""The load jobs running now: one per Canary and load, started, extended and stopped by webhook calls.

A ``rollout`` hook is called at every step of a run. Starting a new job each
time would stack the load up step after step; instead a call asking for the
same load on the same target as a running job of the same Canary pushes that
job's end back. A different load (another target, rate, method) is its own
job. ``post-rollout`` and ``rollback`` calls stop a Canary's jobs at once.
The number of jobs is bounded, and so is each job's load (by the limits its
spec was read with), so the tester's total load has a known ceiling.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from canaryd.loadtest.engine import LoadStats, Pacer, recorder, run_workers, sender_for
from canaryd.loadtest.metrics import LoadTestMetrics
from canaryd.loadtest.spec import LoadSpec

log = structlog.get_logger("canaryd.loadtest")


class TooManyJobs(Exception):
    pass


@dataclass
class Job:
    id: str
    namespace: str
    canary: str
    spec: LoadSpec
    addresses: list[str]
    deadline: float
    stats: LoadStats = field(default_factory=LoadStats)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "canary": f"{self.namespace}/{self.canary}",
            "target": self.spec.target.url,
            "protocol": self.spec.protocol,
            "method": self.spec.method,
            "rps": self.spec.rps,
            "concurrency": self.spec.concurrency,
            "secondsLeft": round(max(0.0, self.deadline - now), 3),
            "running": not self.done.is_set(),
            "stats": self.stats.summary(),
        }


class JobManager:
    def __init__(
        self, metrics: LoadTestMetrics, *, max_jobs: int, clock: Callable[[], float] = time.monotonic
    ):
        self.metrics = metrics
        self.max_jobs = max_jobs
        self._clock = clock
        self._jobs: dict[tuple[Any, ...], Job] = {}
        self._ids = itertools.count(1)

    def now(self) -> float:
        return self._clock()

    def running(self) -> list[Job]:
        return [job for job in self._jobs.values() if not job.done.is_set()]

    def start_or_extend(
        self, namespace: str, canary: str, spec: LoadSpec, addresses: list[str]
    ) -> tuple[Job, bool]:
        """The job sending ``spec`` for this Canary, extended to ``spec.duration`` from now; True when new."""
        key = (namespace, canary, spec.key)
        now = self._clock()
        job = self._jobs.get(key)
        if job is not None and not job.done.is_set() and not job.stopping.is_set():
            job.deadline = max(job.deadline, now + spec.duration)
            return job, False
        if len(self.running()) >= self.max_jobs:
            raise TooManyJobs(
                f"{self.max_jobs} load jobs are running, the most this load tester runs at once"
            )
        job = Job(
            id=f"job-{next(self._ids)}",
            namespace=namespace,
            canary=canary,
            spec=spec,
            addresses=addresses,
            deadline=now + spec.duration,
        )
        self._jobs[key] = job
        job.task = asyncio.get_running_loop().create_task(self._run(key, job), name=job.id)
        self.metrics.jobs.set(len(self.running()))
        return job, True

    async def _run(self, key: tuple[Any, ...], job: Job) -> None:
        spec = job.spec
        sender = sender_for(spec, job.addresses)
        record = recorder(self.metrics, spec)
        in_flight = self.metrics.in_flight.labels(spec.target.namespace, spec.target.label)

        async def send_one() -> tuple[str, str | None]:
            in_flight.inc()
            try:
                return await sender.send_one()
            finally:
                in_flight.dec()

        log.info(
            "load started",
            job=job.id,
            canary=f"{job.namespace}/{job.canary}",
            load=spec.describe(),
            addresses=job.addresses,
        )
        try:
            await run_workers(
                spec.concurrency,
                Pacer(spec.rps, self._clock),
                send_one,
                deadline=lambda: job.deadline,
                stats=job.stats,
                record=record,
                stopping=job.stopping,
                clock=self._clock,
            )
        except Exception as exc:  # a bug in one job must not take the service down
            log.error("load job failed", job=job.id, error=str(exc))
        finally:
            job.stats.finished_at = self._clock()
            with contextlib.suppress(Exception):
                await sender.close()
            job.done.set()
            if self._jobs.get(key) is job:
                del self._jobs[key]
            self.metrics.jobs.set(len(self.running()))
            log.info(
                "load finished", job=job.id, canary=f"{job.namespace}/{job.canary}", **job.stats.summary()
            )

    def stop(self, namespace: str, canary: str) -> list[Job]:
        """Stop every job of this Canary; they finish the requests in flight."""
        stopped = [job for (ns, name, _), job in self._jobs.items() if (ns, name) == (namespace, canary)]
        for job in stopped:
            job.stopping.set()
        return stopped

    def describe(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [job.describe(now) for job in self._jobs.values()]

    async def shutdown(self, timeout: float = 10.0) -> None:
        jobs = list(self._jobs.values())
        for job in jobs:
            job.stopping.set()
        tasks = [job.task for job in jobs if job.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
