"""Shard Leases: several replicas split the Canaries, each shard held through its own Lease.

Every replica keeps a membership Lease of its own and, once per
``retry_period``, lists the group's Leases (one LIST), works out which members
are alive and who holds each shard, and asks ``core.sharding.plan_shards`` what
to do: take free shards it is preferred for, renew the ones it keeps, hand
over the ones another live member is preferred for.

Liveness follows the client-go rule: a Lease whose record has not changed for
its ``leaseDurationSeconds``, measured on this replica's clock from when it
saw the record change, is expired, so clock skew between nodes does not
matter. Every write is a PUT carrying the resourceVersion that was read (or a
create, for a shard never held), so two replicas racing for a shard cannot both
win. A holder that cannot renew a shard for ``renew_deadline`` stops working
it before anyone else may take it; a shard being handed over is stopped first
and released after. On shutdown the replica releases its shards and deletes its
membership, so the others take over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from canaryd.adapters.kube import LEASES, ApiError, KubeClient
from canaryd.adapters.leader import lease_spec
from canaryd.api.timestamps import format_rfc3339
from canaryd.core.sharding import plan_shards

log = structlog.get_logger("canaryd.shards")

GROUP_LABEL = "canaryd.io/lease-group"
ROLE_LABEL = "canaryd.io/lease-role"
SHARD_LABEL = "canaryd.io/shard"

ShardCallback = Callable[[int], Awaitable[None]]


def member_lease_name(group: str, identity: str) -> str:
    """A valid, unique Lease name for a replica's membership, whatever its identity looks like."""
    readable = re.sub(r"[^a-z0-9-]+", "-", identity.lower()).strip("-")[:32]
    suffix = hashlib.blake2b(identity.encode(), digest_size=4).hexdigest()
    return f"{group}-member-{readable}-{suffix}".replace("--", "-")


def shard_lease_name(group: str, shard: int) -> str:
    return f"{group}-shard-{shard}"


class ShardElector:
    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        group: str,
        identity: str,
        shards: int,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_acquired: ShardCallback,
        on_lost: ShardCallback,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        if shards < 1:
            raise ValueError("shards must be at least 1")
        self.client = client
        self.namespace = namespace
        self.group = group
        self.identity = identity
        self.shards = shards
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._clock = clock
        self.member_name = member_lease_name(group, identity)
        #: Shards this replica holds, and when it last renewed each.
        self.held: dict[int, float] = {}
        self._member: dict[str, Any] | None = None
        #: Per Lease name: the record last seen and when it changed (this replica's clock).
        self._seen: dict[str, tuple[tuple[str, str, str], float]] = {}
        self._task: asyncio.Task[None] | None = None
        #: Set once this replica has completed one round (holding shards or not).
        self.participating = asyncio.Event()

    # -- records --------------------------------------------------------------------------------

    def _spec(self, acquire_time: str, transitions: int) -> dict[str, Any]:
        return lease_spec(self.identity, self.lease_duration, acquire_time, transitions)

    def _body(self, name: str, role: str, shard: int | None) -> dict[str, Any]:
        labels = {GROUP_LABEL: self.group, ROLE_LABEL: role}
        if shard is not None:
            labels[SHARD_LABEL] = str(shard)
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": self._spec("", 0),
        }

    def _live_holder(self, lease: dict[str, Any], now: float) -> str | None:
        """The Lease's holder if it is alive by this replica's observation, else None."""
        name = str((lease.get("metadata") or {}).get("name", ""))
        spec = lease.get("spec") or {}
        record = (
            str(spec.get("holderIdentity") or ""),
            str(spec.get("renewTime") or ""),
            str(spec.get("acquireTime") or ""),
        )
        seen = self._seen.get(name)
        if seen is None or seen[0] != record:
            self._seen[name] = (record, now)
            changed_at = now
        else:
            changed_at = seen[1]
        holder = record[0]
        if not holder:
            return None
        if holder == self.identity:
            return holder
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        return holder if now - changed_at <= duration else None

    # -- one round ------------------------------------------------------------------------------

    async def _renew_member(self) -> None:
        if self._member is None:
            try:
                self._member = await self.client.create(
                    LEASES, self.namespace, self._body(self.member_name, "member", None)
                )
                return
            except ApiError as exc:
                if not exc.already_exists:
                    raise
                self._member = await self.client.get(LEASES, self.namespace, self.member_name)
        spec = self._member.get("spec") or {}
        updated = {**self._member, "spec": self._spec(str(spec.get("acquireTime") or ""), 0)}
        try:
            self._member = await self.client.replace(LEASES, self.namespace, self.member_name, updated)
        except ApiError as exc:
            self._member = None  # read it again next round
            if not (exc.conflict or exc.not_found):
                raise

    async def run_round(self) -> None:
        """Renew membership, read the group's Leases once, then take, renew and hand over shards."""
        now = self._clock()
        try:
            await self._renew_member()
            selector = f"{GROUP_LABEL}={self.group}"
            listing = await self.client.list(LEASES, self.namespace, labelSelector=selector)
        except ApiError as exc:
            log.warning("reading the shard leases failed", status=exc.status, error=exc.message)
            await self._drop_overdue(now)
            return
        members: list[str] = []
        holders: dict[int, str | None] = {}
        leases: dict[int, dict[str, Any]] = {}
        for lease in listing.get("items") or []:
            labels = (lease.get("metadata") or {}).get("labels") or {}
            holder = self._live_holder(lease, now)
            if labels.get(ROLE_LABEL) == "member":
                if holder is not None:
                    members.append(holder)
                continue
            try:
                shard = int(labels.get(SHARD_LABEL, ""))
            except ValueError:
                continue
            if 0 <= shard < self.shards:
                holders[shard] = holder
                leases[shard] = lease
        for shard in list(self.held):
            if holders.get(shard) != self.identity:  # someone else took it: we must have stalled
                await self._lose(shard, "taken by another replica")
        plan = plan_shards(self.shards, self.identity, members, holders)
        for shard in sorted(plan.release):
            await self._lose(shard, "handed over to the replica preferred for it")
            await self._write_free(leases[shard])
        for shard in sorted(plan.renew):
            # A Lease that still names this replica after it stopped working the shard (it missed the
            # renew deadline): renewing it takes the shard back, so it is worked again.
            resumed = shard not in self.held
            if await self._write_held(shard, leases.get(shard)):
                self.held[shard] = self._clock()
                if resumed:
                    log.info("took a shard back", shard=shard, identity=self.identity)
                    await self._on_acquired(shard)
        await self._drop_overdue(self._clock())
        for shard in sorted(plan.acquire):
            if await self._write_held(shard, leases.get(shard)):
                self.held[shard] = self._clock()
                log.info("took a shard", shard=shard, identity=self.identity)
                await self._on_acquired(shard)

    async def _write_held(self, shard: int, lease: dict[str, Any] | None) -> bool:
        """Create or take-or-renew the shard's Lease for this replica; False when another write won."""
        name = shard_lease_name(self.group, shard)
        try:
            if lease is None:
                created = await self.client.create(LEASES, self.namespace, self._body(name, "shard", shard))
                self._live_holder(created, self._clock())
                return True
            spec = lease.get("spec") or {}
            transitions = int(spec.get("leaseTransitions") or 0)
            acquire_time = str(spec.get("acquireTime") or "")
            if spec.get("holderIdentity") != self.identity:
                transitions, acquire_time = transitions + 1, ""
            written = await self.client.replace(
                LEASES, self.namespace, name, {**lease, "spec": self._spec(acquire_time, transitions)}
            )
            self._live_holder(written, self._clock())
            return True
        except ApiError as exc:
            log.info("shard lease write lost", shard=shard, status=exc.status)
            return False

    async def _write_free(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        freed = {
            **spec,
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "renewTime": format_rfc3339(datetime.now(UTC), "microseconds"),
        }
        name = str((lease.get("metadata") or {}).get("name", ""))
        try:
            await self.client.replace(LEASES, self.namespace, name, {**lease, "spec": freed})
        except ApiError as exc:
            log.warning("releasing a shard lease failed", lease=name, status=exc.status)

    async def _drop_overdue(self, now: float) -> None:
        for shard, renewed in list(self.held.items()):
            if now - renewed >= self.renew_deadline:
                await self._lose(shard, "could not renew its lease in time")

    async def _lose(self, shard: int, why: str) -> None:
        if self.held.pop(shard, None) is None:
            return
        log.warning("stopped working a shard", shard=shard, reason=why, identity=self.identity)
        await asyncio.shield(self._on_lost(shard))

    # -- the loop -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="shard-election")

    async def _run(self) -> None:
        while True:
            try:
                await self.run_round()
            except ApiError as exc:
                log.warning("shard round failed", status=exc.status, error=exc.message)
            self.participating.set()
            await asyncio.sleep(self.retry_period)

    async def stop(self, release: bool = True) -> None:
        """Stop campaigning; stop working every shard; with ``release``, free them and leave the group."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        held = sorted(self.held)
        for shard in held:
            await self._lose(shard, "shutting down")
        if not release:
            return
        for shard in held:
            with contextlib.suppress(ApiError):
                lease = await self.client.get(LEASES, self.namespace, shard_lease_name(self.group, shard))
                if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                    await self._write_free(lease)
        with contextlib.suppress(ApiError):
            await self.client.delete(LEASES, self.namespace, self.member_name)
        log.info("left the shard group", identity=self.identity, released=held)


__all__ = ["ShardElector", "member_lease_name", "shard_lease_name"]
