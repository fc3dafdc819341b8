"""Which replica works which Canary: shards by a stable hash, and which shards a replica should hold.

With several replicas, Canaries are split into a fixed number of shards by a
hash of ``namespace/name`` that every replica computes alike (not Python's
``hash``, which changes between processes). Each shard is held through its own
Lease. Which live replica ought to hold a shard is decided by rendezvous
hashing capped at an even share (``assignment``), so every replica reaches the
same answer from the same list of members, no replica holds more than
``ceil(shards / replicas)``, and a member joining or leaving moves few shards.

These are pure functions; the Leases themselves are read and written by
``canaryd.adapters.shards``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def shard_of(namespace: str, name: str, shards: int) -> int:
    """The shard (0 .. shards-1) a Canary belongs to; the same in every process and on every machine."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    return _digest(f"{namespace}/{name}") % shards


def assignment(shards: int, members: Iterable[str]) -> dict[int, str]:
    """Which live member ought to hold each shard: rendezvous hashing, held to an even share.

    Every (shard, member) pair is ranked by its hash; going down the ranking, a
    shard goes to the member of the pair if that member still has room: each
    holds ``shards // members`` shards, and the first ``shards % members`` to
    fill up one more. Every replica computes the same answer from the same
    members, loads differ by at most one, and a member joining or leaving
    moves few shards besides its own.
    """
    live = sorted(set(members))
    if not live:
        return {}
    floor, extra = divmod(shards, len(live))
    ranked = sorted(
        ((_digest(f"{member}#{shard}"), member, shard) for shard in range(shards) for member in live),
        reverse=True,
    )
    owner: dict[int, str] = {}
    load = dict.fromkeys(live, 0)
    above_floor = 0
    for _, member, shard in ranked:
        if shard in owner:
            continue
        room = floor + (1 if above_floor < extra else 0)
        if load[member] < room:
            owner[shard] = member
            load[member] += 1
            if load[member] == floor + 1:
                above_floor += 1
    return owner


@dataclass(frozen=True)
class ShardPlan:
    """What one replica does with the shard Leases in one round."""

    #: Shards to take: free or expired, and this replica is the one that ought to hold them.
    acquire: frozenset[int]
    #: Shards held and kept: renew their Leases.
    renew: frozenset[int]
    #: Shards held that another live member ought to hold: stop working them, then give them up.
    release: frozenset[int]


def plan_shards(shards: int, me: str, members: Iterable[str], holders: Mapping[int, str | None]) -> ShardPlan:
    """One replica's round: ``holders`` maps each shard to its live holder (None when free or expired).

    ``members`` are the replicas that are alive (this one included, whether or
    not it is listed). A shard whose preferred member is this replica is taken
    when free; a shard held by nobody alive is taken by its preferred member
    only, so two replicas never race for it. A shard held here that another
    live member prefers is handed over: released, then taken by that member
    once free. A shard another live replica holds is left to it.
    """
    wanted_by = assignment(shards, {*members, me})
    acquire: set[int] = set()
    renew: set[int] = set()
    release: set[int] = set()
    for shard in range(shards):
        holder = holders.get(shard)
        wanted = wanted_by.get(shard)
        if holder == me:
            (renew if wanted == me else release).add(shard)
        elif holder is None and wanted == me:
            acquire.add(shard)
    return ShardPlan(frozenset(acquire), frozenset(renew), frozenset(release))


__all__ = ["ShardPlan", "assignment", "plan_shards", "shard_of"]
