"""Shard Leases between replicas in the sandbox API server: split, take over, hand over, never both."""

from __future__ import annotations

import asyncio
import re

import pytest

from canaryd.adapters.shards import ShardElector, member_lease_name, shard_lease_name
from canaryd.sandbox.server.apiserver import SandboxApiServer
from tests.adapters.kube_sandbox import connect

LEASE_NS = "canaryd-system"
SHARDS = 6


@pytest.fixture
async def sandbox(tmp_path):
    server = SandboxApiServer()
    await server.start()
    server.store.ensure_namespace(LEASE_NS)
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    clients = []

    async def client():
        made = await connect(kubeconfig)
        clients.append(made)
        return made

    try:
        yield server, client
    finally:
        for made in clients:
            await made.close()
        await server.stop()


class Replica:
    """A ShardElector and the record of what it was told, and when nobody else held its shards."""

    def __init__(self, client, identity: str, working: dict[int, str]) -> None:
        self.identity = identity
        self.working = working
        self.held: set[int] = set()
        self.elector = ShardElector(
            client,
            namespace=LEASE_NS,
            group="canaryd",
            identity=identity,
            shards=SHARDS,
            lease_duration=1.5,
            renew_deadline=1.0,
            retry_period=0.2,
            on_acquired=self.acquired,
            on_lost=self.lost,
        )

    async def acquired(self, shard: int) -> None:
        other = self.working.get(shard)
        assert other is None, f"{self.identity} took shard {shard} while {other} was working it"
        self.working[shard] = self.identity
        self.held.add(shard)

    async def lost(self, shard: int) -> None:
        assert self.working.pop(shard) == self.identity
        self.held.discard(shard)


async def wait_for(check, timeout=8.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


async def test_three_replicas_split_the_shards_and_a_vanished_ones_are_taken_within_the_lease(sandbox):
    server, client = sandbox
    working: dict[int, str] = {}
    replicas = [Replica(await client(), name, working) for name in ("a", "b", "c")]
    for replica in replicas:
        replica.elector.start()
    await wait_for(lambda: len(working) == SHARDS and all(r.held for r in replicas))
    await asyncio.sleep(0.6)  # settled: hand-overs to later members are done
    assert sorted(working) == list(range(SHARDS))
    for shard, holder in working.items():
        lease = server.store.get("leases", shard_lease_name("canaryd", shard), LEASE_NS)
        assert lease["spec"]["holderIdentity"] == holder
    # c stops renewing without a word, as a killed process does
    victim = replicas[2]
    orphaned = set(victim.held)
    assert orphaned
    victim.elector._task.cancel()  # the process "dies": no release, no callbacks
    for shard in orphaned:
        working.pop(shard)
    loop = asyncio.get_running_loop()
    died_at = loop.time()
    await wait_for(lambda: len(working) == SHARDS)
    took = loop.time() - died_at
    assert set(working.values()) == {"a", "b"}
    assert took < 1.5 + 0.2 + 1.0, f"takeover took {took:.1f}s (lease 1.5s, retry 0.2s)"
    for replica in replicas[:2]:
        await replica.elector.stop()


async def test_a_stopping_replica_hands_its_shards_over_at_once_and_leaves_the_group(sandbox):
    server, client = sandbox
    working: dict[int, str] = {}
    a, b = Replica(await client(), "a", working), Replica(await client(), "b", working)
    a.elector.start()
    await wait_for(lambda: len(a.held) == SHARDS)
    b.elector.start()
    await wait_for(lambda: b.held and len(working) == SHARDS)  # a handed b its share
    assert a.held and not a.held & b.held
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    await a.elector.stop(release=True)
    await wait_for(lambda: len(b.held) == SHARDS, timeout=3)
    assert loop.time() - stopped_at < 1.5, "released shards are taken without waiting for them to expire"
    members = [lease["metadata"]["name"] for lease in server.store.list_refs("leases", LEASE_NS)[0]]
    assert member_lease_name("canaryd", "a") not in members
    assert member_lease_name("canaryd", "b") in members
    await b.elector.stop()


async def test_a_replica_that_cannot_renew_stops_working_before_its_leases_expire(sandbox):
    server, client = sandbox
    working: dict[int, str] = {}
    lonely_client = await client()
    a = Replica(lonely_client, "a", working)
    a.elector.start()
    await wait_for(lambda: len(a.held) == SHARDS)
    await server.stop()  # the API server goes away: no renewal can succeed
    loop = asyncio.get_running_loop()
    gone_at = loop.time()
    await wait_for(lambda: not a.held, timeout=4)
    assert loop.time() - gone_at < 1.5, "stopped after the renew deadline, before the 1.5 s lease expired"
    await a.elector.stop(release=False)


async def test_a_replica_that_missed_its_renew_deadline_works_its_shards_again_once_it_renews(sandbox):
    """Its Leases still name it when the API server answers again: it renews them, and must work them too.

    Before, it renewed them without being told it held them again: the shards stayed held and unworked
    for good, their Canaries stuck (seen in bench_shards on a loaded host).
    """
    server, client = sandbox
    working: dict[int, str] = {}
    a = Replica(await client(), "a", working)
    a.elector.start()
    await wait_for(lambda: len(a.held) == SHARDS)
    outage = server.faults.add("error", resource="leases", code=503)
    await wait_for(lambda: not a.held, timeout=4)
    server.faults.remove(outage.id)
    await wait_for(lambda: len(a.held) == SHARDS, timeout=4)
    assert set(working.values()) == {"a"}
    await a.elector.stop()


def test_member_lease_names_are_valid_for_any_identity() -> None:
    name = member_lease_name("canaryd", "Node_7.Example/pod:1234")
    assert name.startswith("canaryd-member-node-7-example-pod-1234-")
    assert member_lease_name("canaryd", "x") != member_lease_name("canaryd", "X")
    long_name = member_lease_name("canaryd", "p" * 300)
    assert len(long_name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", long_name)
