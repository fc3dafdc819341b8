"""Leader election between two candidates on one Lease in the sandbox API server."""

from __future__ import annotations

import asyncio

import pytest

from canaryd.adapters.kube import LEASES
from canaryd.adapters.leader import LeaderElector
from canaryd.sandbox.server.apiserver import SandboxApiServer
from tests.adapters.kube_sandbox import connect

LEASE_NS = "canaryd-system"


@pytest.fixture
async def clients(tmp_path):
    server = SandboxApiServer()
    await server.start()
    server.store.ensure_namespace(LEASE_NS)
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    a, b = await connect(kubeconfig), await connect(kubeconfig)
    try:
        yield server, a, b
    finally:
        await a.close()
        await b.close()
        await server.stop()


def elector(client, identity, log):
    async def started():
        log.append(("start", identity))

    async def stopped():
        log.append(("stop", identity))

    return LeaderElector(
        client,
        namespace=LEASE_NS,
        name="canaryd-leader",
        identity=identity,
        lease_duration=1.5,
        renew_deadline=1.0,
        retry_period=0.2,
        on_started_leading=started,
        on_stopped_leading=stopped,
    )


async def wait_for(check, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


async def test_only_one_leads_and_a_release_hands_over_at_once(clients):
    server, a_client, b_client = clients
    log: list[tuple[str, str]] = []
    a, b = elector(a_client, "a", log), elector(b_client, "b", log)
    a.start()
    await wait_for(lambda: a.is_leader)
    b.start()
    await asyncio.sleep(1.0)
    assert a.is_leader and not b.is_leader
    assert server.store.get("leases", "canaryd-leader", LEASE_NS)["spec"]["holderIdentity"] == "a"
    loop = asyncio.get_running_loop()
    released_at = loop.time()
    await a.stop(release=True)
    await wait_for(lambda: b.is_leader, timeout=2)
    assert loop.time() - released_at < 1.5, "a released Lease is taken without waiting for it to expire"
    assert log == [("start", "a"), ("stop", "a"), ("start", "b")]
    lease = server.store.get("leases", "canaryd-leader", LEASE_NS)
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    await b.stop()


async def test_a_vanished_leader_is_replaced_after_the_lease_expires(clients):
    _server, a_client, b_client = clients
    log: list[tuple[str, str]] = []
    a, b = elector(a_client, "a", log), elector(b_client, "b", log)
    a.start()
    await wait_for(lambda: a.is_leader)
    b.start()
    await a.stop(release=False)  # as if the process died: the Lease is left behind
    loop = asyncio.get_running_loop()
    died_at = loop.time()
    await wait_for(lambda: b.is_leader, timeout=5)
    assert loop.time() - died_at >= 1.0, "the standby waited for the Lease to expire"
    await b.stop()


async def test_a_leader_that_cannot_renew_stops_leading(clients):
    server, a_client, _ = clients
    log: list[tuple[str, str]] = []
    a = elector(a_client, "a", log)
    a.start()
    await wait_for(lambda: a.is_leader)
    server.faults.add("error", resource="leases", code=503)
    await wait_for(lambda: not a.is_leader, timeout=3)
    # The stop callback runs as its own task (shielded from the elector's cancellation), just after.
    await wait_for(lambda: len(log) > 1, timeout=1)
    assert log == [("start", "a"), ("stop", "a")]
    server.faults.clear()
    await a.stop()


async def test_lease_written_by_the_winner_only(clients):
    server, a_client, b_client = clients
    a, b = elector(a_client, "a", []), elector(b_client, "b", [])
    results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
    assert sorted(results) == [False, True]
    holder = server.store.get("leases", "canaryd-leader", LEASE_NS)["spec"]["holderIdentity"]
    assert holder == ("a" if results[0] else "b")
    assert (await a_client.get(LEASES, LEASE_NS, "canaryd-leader"))["spec"]["holderIdentity"] == holder
