"""Leader election on a coordination.k8s.io/v1 Lease, so that two replicas never both act.

The protocol is the one client-go uses. A candidate takes the Lease when it
is free or when its holder has not renewed it for ``lease_duration`` seconds,
measured on the candidate's own clock from when it last saw the record change
(so clock skew between nodes does not matter). The holder renews every
``retry_period``; if it cannot renew for ``renew_deadline`` it stops acting
before anyone else may start. Every write is a PUT carrying the
resourceVersion that was read, so two candidates racing for a free Lease
cannot both win. On shutdown the holder releases the Lease so the standby
takes over at once instead of waiting for it to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from canaryd.adapters.kube import LEASES, ApiError, KubeClient
from canaryd.api.timestamps import format_rfc3339

log = structlog.get_logger("canaryd.leader")

Callback = Callable[[], Awaitable[None]]


def lease_spec(identity: str, lease_duration: float, acquire_time: str, transitions: int) -> dict[str, Any]:
    """A coordination.k8s.io/v1 Lease spec held by ``identity``, renewed now (acquired now if not before)."""
    now = format_rfc3339(datetime.now(UTC), "microseconds")
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": max(1, round(lease_duration)),
        "acquireTime": acquire_time or now,
        "renewTime": now,
        "leaseTransitions": transitions,
    }


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callback | None = None,
        on_stopped_leading: Callback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock
        self._observed_record: tuple[str, str, str] | None = None
        self._observed_at = 0.0
        self._lease: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self.is_leader = False
        #: Set once this candidate has talked to the Lease at least once (leader or standby).
        self.participating = asyncio.Event()

    # -- one attempt ----------------------------------------------------------------------------

    def _spec(self, acquire_time: str, transitions: int) -> dict[str, Any]:
        return lease_spec(self.identity, self.lease_duration, acquire_time, transitions)

    async def try_acquire_or_renew(self) -> bool:
        """One round of the protocol; True when this candidate holds the Lease afterwards."""
        try:
            lease = await self.client.get(LEASES, self.namespace, self.name)
        except ApiError as exc:
            if not exc.not_found:
                log.warning("reading the lease failed", status=exc.status, error=exc.message)
                return False
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec("", 0),
            }
            try:
                self._lease = await self.client.create(LEASES, self.namespace, body)
            except ApiError as create_exc:
                log.info("lost the race to create the lease", status=create_exc.status)
                return False
            self._observe(self._lease)
            return True
        finally:
            self.participating.set()

        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        self._observe(lease)
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        expired = self._clock() - self._observed_at > duration
        if holder and holder != self.identity and not expired:
            self._lease = lease
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        acquire_time = spec.get("acquireTime") or ""
        if holder != self.identity:
            transitions += 1
            acquire_time = ""
        updated = {**lease, "spec": self._spec(acquire_time, transitions)}
        try:
            self._lease = await self.client.replace(LEASES, self.namespace, self.name, updated)
        except ApiError as exc:
            log.info("lease update lost", status=exc.status)
            return False
        self._observe(self._lease)
        return True

    def _observe(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        record = (
            str(spec.get("holderIdentity") or ""),
            str(spec.get("renewTime") or ""),
            str(spec.get("acquireTime")),
        )
        if record != self._observed_record:
            self._observed_record = record
            self._observed_at = self._clock()

    # -- the loop -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="leader-election")

    async def _run(self) -> None:
        while True:
            if await self.try_acquire_or_renew():
                await self._lead()
            await asyncio.sleep(self.retry_period)

    async def _lead(self) -> None:
        self.is_leader = True
        log.info("became leader", lease=f"{self.namespace}/{self.name}", identity=self.identity)
        if self._on_started is not None:
            await self._on_started()
        last_renew = self._clock()
        try:
            while True:
                await asyncio.sleep(self.retry_period)
                if await self.try_acquire_or_renew():
                    last_renew = self._clock()
                elif self._clock() - last_renew >= self.renew_deadline or self._held_by_other():
                    break
        finally:
            self.is_leader = False
            log.warning("stopped leading", lease=f"{self.namespace}/{self.name}", identity=self.identity)
            if self._on_stopped is not None:
                await asyncio.shield(self._on_stopped())

    def _held_by_other(self) -> bool:
        holder = ((self._lease or {}).get("spec") or {}).get("holderIdentity") or ""
        return bool(holder) and holder != self.identity

    async def stop(self, release: bool = True) -> None:
        """Stop campaigning; when leading, give the Lease up so a standby can take over at once."""
        was_leader = self.is_leader
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if release and was_leader:
            await self.release()

    async def release(self) -> None:
        try:
            lease = await self.client.get(LEASES, self.namespace, self.name)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            lease["spec"] = {
                **spec,
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "renewTime": format_rfc3339(datetime.now(UTC), "microseconds"),
            }
            await self.client.replace(LEASES, self.namespace, self.name, lease)
            log.info("released the lease", lease=f"{self.namespace}/{self.name}")
        except ApiError as exc:
            log.warning("releasing the lease failed", status=exc.status, error=exc.message)
